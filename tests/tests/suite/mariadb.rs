//! The MySQL/MariaDB engine against real MariaDB servers: one throwaway
//! `mariadbd` per test (see `harness/mariadb.rs`).

use dbsafe_tests::mariadb::Server;
use dbsafe_tests::testdb::TestDb;
use dbsafe_tests::{
    meta_counts, restore_file, restore_table_over, rows_of, scenarios, snap_fails_leaving_nothing,
    snap_raw, verify_full_json, Cmd, Scene,
};

dbsafe_tests::server_scenarios!(Server::start());

#[test]
fn backup_verifies_at_every_level_and_restores_identically_into_another_database() {
    let m = Server::start();
    let b = scenarios::backup_verifies_at_every_level_and_restores_identically(&m, "shop", 300);
    let version = b.engine_version();
    assert!(version.contains("MariaDB"), "{version}");
    assert_eq!(rows_of(&b.meta, "customers"), 300);
    assert_eq!(rows_of(&b.meta, "empty_table"), 0);
    assert_eq!(rows_of(&b.meta, "odd name, (x)"), 3);
    assert_eq!(meta_counts(&b.meta).len(), 6, "{}", b.meta);
    // The trigger works in the copy.
    m.sql(
        &b.restored,
        "INSERT INTO orders(customer_id, total) VALUES (1, 1);",
    );
    assert_eq!(m.count(&b.restored, "audit_log"), 301);
}

#[test]
fn recorded_row_counts_are_those_of_the_dump_while_a_writer_inserts() {
    scenarios::snapshot_under_concurrent_writes_records_the_counts_it_restores(&Server::start());
}

#[test]
fn table_option_restores_only_that_table() {
    let m = Server::start();
    let (_s, art) = scenarios::plain_snapshot_of_shop(&m, 200);
    let of = |v: Vec<(String, String)>, t: &str| v.into_iter().find(|(n, _)| n == t);

    restore_file(&art, m.url("part"))
        .args(["--create", "--table", "customers"])
        .succeeds();
    assert_eq!(m.counts("part"), vec![("customers".to_string(), 200)]);
    assert_eq!(
        of(m.checksums("part"), "customers"),
        of(m.checksums("shop"), "customers")
    );

    // Into a non-empty database: only the named table is replaced.
    m.sql("part", "DELETE FROM customers WHERE id > 10;");
    m.sql("shop", "CREATE TABLE untouched(x INT);");
    restore_table_over(&art, m.url("part"), "odd name, (x)").succeeds();
    assert_eq!(
        m.counts("part"),
        vec![
            ("customers".to_string(), 10),
            ("odd name, (x)".to_string(), 3)
        ]
    );

    restore_table_over(&art, m.url("part"), "nope").fails_with(3, "not in the backup");
}

#[test]
fn a_truncated_dump_fails_verification_and_is_not_restored() {
    let s = Scene::new();
    let m = Server::start();
    m.fixture("shop", 2000);
    let full = s.path("shop.sql");
    snap_raw(m.url("shop"), &full).succeeds();
    let bytes = std::fs::read(&full).expect("dump");
    let cut = s.path("cut.sql");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).expect("write");
    let r = verify_full_json(&cut).fails_with_code(1);
    assert!(
        r.stdout().contains("Dump completed"),
        "the report does not say the dump is incomplete:\n{}",
        r.stdout()
    );
    restore_file(&cut, m.url("cut"))
        .arg("--create")
        .fails_with(1, "failed verification");
    assert!(!m.databases().contains(&"cut".to_string()));
}

/// A restore the server stops midway (a statement over its packet limit):
/// the failure says why, and no row of the dump reaches the message, the
/// audit log or the --on-failure hook, though the client saw them all.
#[test]
fn a_failed_restore_names_the_error_and_no_row_of_the_dump() {
    let s = Scene::new();
    let m = Server::start();
    m.sql("", "CREATE DATABASE pii;");
    m.sql(
        "pii",
        "CREATE TABLE cust(id INT PRIMARY KEY, ssn TEXT);\n\
         INSERT INTO cust SELECT seq, CONCAT('SSN-', seq) FROM seq_1_to_2000;",
    );
    let art = s.path("pii.sql.zst");
    dbsafe_tests::snap_to_file(m.url("pii"), &art).succeeds();
    m.sql("", "SET GLOBAL max_allowed_packet = 16384;");
    let hook_saw = s.path("hook.txt");
    let audit = s.path("audit.log");
    for _ in 0..2 {
        let _ = std::fs::remove_file(&hook_saw);
        let r = restore_file(&art, m.url("copy"))
            .args(["--create", "--skip-verify", "--on-failure"])
            .arg(format!(
                "printf %s \"$DBSAFE_MESSAGE\" > {}",
                hook_saw.display()
            ))
            .env("DBSAFE_AUDIT_LOG", &audit)
            .fails_with_code(1);
        // The server says it one way or the other, as its timing goes.
        assert!(
            r.stderr().contains("max_allowed_packet")
                || r.stderr().contains("Server has gone away"),
            "{}",
            r.stderr()
        );
        for (what, text) in [
            ("stderr", r.stderr()),
            ("the hook", std::fs::read_to_string(&hook_saw).unwrap()),
            ("the audit log", std::fs::read_to_string(&audit).unwrap()),
        ] {
            // Each saw the failure, and none of the rows.
            assert!(
                text.contains("mariadb restoring into"),
                "{what} did not see it: {text}"
            );
            assert!(!text.contains("SSN-"), "a row reached {what}: {text}");
        }
        m.sql("", "DROP DATABASE IF EXISTS copy;");
    }
    m.sql("", "SET GLOBAL max_allowed_packet = DEFAULT;");
}

#[test]
fn a_missing_source_database_fails_and_leaves_nothing() {
    let s = Scene::new();
    let m = Server::start();
    snap_fails_leaving_nothing(&s, m.url("nope"), "nope.sql.zst", "Unknown database");
}

#[test]
fn a_missing_client_tool_is_named_with_its_package() {
    let s = Scene::new();
    let empty = s.mkdir("empty");
    let url = "mysql://root@127.0.0.1:1/shop";
    Cmd::tool("dbsnap")
        .arg("--no-encrypt")
        .env("PATH", &empty)
        .arg(url)
        .arg("-o")
        .arg(s.path("x.sql.zst"))
        .fails_with(2, "mariadb-dump is not installed")
        .stderr_has("mariadb-client");
    s.write("a.sql", "-- MariaDB dump\n-- Dump completed\n");
    Cmd::tool("dbrestore")
        .env("PATH", &empty)
        .arg(s.path("a.sql"))
        .arg("--target")
        .arg(url)
        .fails_with(2, "mariadb is not installed")
        .stderr_has("mariadb-client");
}
