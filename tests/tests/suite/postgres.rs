//! The PostgreSQL engine against real PostgreSQL 15 servers: one throwaway
//! cluster per test (see `harness/pg.rs`).

use dbsafe_tests::pg::Cluster;
use dbsafe_tests::testdb::TestDb;
use dbsafe_tests::{
    argv_containing, artifacts, bin, free_port, meta_counts, require, restore_file,
    restore_table_over, scenarios, snap_fails_leaving_nothing, snap_to_file, snap_to_store,
    temporaries, wait_until, Cmd, Scene,
};
use std::path::PathBuf;
use std::time::Duration;

dbsafe_tests::server_scenarios!(Cluster::start());

#[test]
fn backup_verifies_at_every_level_and_restores_identically_into_another_database() {
    let pg = Cluster::start();
    let b = scenarios::backup_verifies_at_every_level_and_restores_identically(&pg, "shop", 300);
    let version = b.engine_version();
    assert!(version.starts_with("15."), "{version}");
    assert_eq!(
        meta_counts(&b.meta).len(),
        4,
        "customers, events, orders, shop.items"
    );
    // More than table contents: the sequence, the view, the index and the foreign key.
    let copy = b.restored.as_str();
    assert_eq!(
        pg.scalar(copy, "SELECT last_value FROM invoice_no;"),
        "1234"
    );
    assert_eq!(pg.count(copy, "big_orders"), pg.count("shop", "big_orders"));
    assert_eq!(
        pg.count(copy, "pg_indexes WHERE indexname = 'orders_customer_idx'"),
        1
    );
    assert_eq!(pg.count(copy, "pg_constraint WHERE contype = 'f'"), 1);
}

#[test]
fn recorded_row_counts_are_those_of_the_dump_while_a_writer_inserts() {
    let pg = Cluster::start();
    let meta = scenarios::snapshot_under_concurrent_writes_records_the_counts_it_restores(&pg);
    assert_eq!(
        meta["extra"]["row_counts"], "from the dump stream",
        "counted off the stream, not by a second scan"
    );
}

#[test]
fn an_unreachable_server_fails_with_the_connection_error() {
    let s = Scene::new();
    let port = free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/shop");
    snap_fails_leaving_nothing(&s, &url, "x.pgdump.zst", "Connection refused")
        .stderr_has(&port.to_string());

    s.write("a.pgdump", "PGDMP");
    restore_file(s.path("a.pgdump"), &url)
        .arg("--create")
        .fails_with(1, "Connection refused");
}

#[test]
fn a_missing_client_tool_is_named_with_its_package() {
    let s = Scene::new();
    // psql is there, pg_dump is not.
    let only_psql = s.mkdir("only-psql");
    std::os::unix::fs::symlink(
        require("psql", "the Debian package postgresql-client"),
        only_psql.join("psql"),
    )
    .expect("symlink");
    let url = format!("postgres://postgres@127.0.0.1:{}/shop", free_port());
    Cmd::tool("dbsnap")
        .arg("--no-encrypt")
        .env("PATH", &only_psql)
        .arg(&url)
        .arg("-o")
        .arg(s.path("x.pgdump.zst"))
        .fails_with(2, "pg_dump is not installed")
        .stderr_has("postgresql-client");

    let empty = s.mkdir("empty");
    s.write("a.pgdump", "PGDMP");
    Cmd::tool("dbrestore")
        .env("PATH", &empty)
        .arg(s.path("a.pgdump"))
        .arg("--target")
        .arg(&url)
        .fails_with(2, "psql is not installed")
        .stderr_has("postgresql-client");
}

#[test]
fn table_option_restores_only_that_table() {
    let pg = Cluster::start();
    let (_s, art) = scenarios::plain_snapshot_of_shop(&pg, 200);

    restore_file(&art, pg.url("part"))
        .args(["--create", "--table", "customers"])
        .succeeds();
    assert_eq!(
        pg.counts("part"),
        vec![("public.customers".to_string(), 200)]
    );
    let customers = |db: &str| {
        pg.digests(db)
            .into_iter()
            .find(|(t, _)| t == "public.customers")
    };
    assert_eq!(customers("part"), customers("shop"));

    // A table in another schema, into the same (now non-empty) database.
    restore_table_over(&art, pg.url("part"), "shop.items").succeeds();
    assert_eq!(
        pg.counts("part"),
        vec![
            ("public.customers".to_string(), 200),
            ("shop.items".to_string(), 20)
        ]
    );
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let s = Scene::new();
    let pg = Cluster::start();
    pg.fixture("shop", 200);
    pg.fixture("prod", 50);
    let store = s.path("store");
    snap_to_store(pg.url("shop"), &store).succeeds();
    let select = |c: Cmd| {
        c.arg("--store")
            .arg(&store)
            .args(["--latest", "--database", "shop"])
    };

    let r = select(Cmd::tool("dbrestore"))
        .arg("--target")
        .arg(pg.url("fresh"))
        .args(["--create", "--dry-run"])
        .succeeds();
    assert!(
        r.stdout().contains("dry run") && r.stdout().contains("restore into"),
        "{}",
        r.stdout()
    );
    assert!(!pg.databases().contains(&"fresh".to_string()));

    let before = pg.digests("prod");
    let r = select(Cmd::tool("dbrestore"))
        .arg("--target")
        .arg(pg.url("prod"))
        .args(["--clean", "--yes", "--dry-run"])
        .succeeds();
    assert!(r.stdout().contains("safety backup"), "{}", r.stdout());
    assert_eq!(pg.digests("prod"), before);
    assert_eq!(artifacts(&store).len(), 1, "a dry run took a safety backup");
    assert!(
        !store.join("audit.log").exists(),
        "a dry run wrote the audit log"
    );
}

#[test]
fn sigint_during_a_snapshot_stops_the_client_tools_and_leaves_no_output() {
    let s = Scene::new();
    let pg = Cluster::start();
    pg.fixture("shop", 200);
    // A session holding an exclusive lock keeps pg_dump waiting, so the
    // interrupt surely comes while the client tools run.
    let mut locker = pg
        .psql_cmd("shop")
        .arg("-c")
        .arg("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);")
        .spawn();
    wait_until("the lock", Duration::from_secs(60), || {
        pg.count(
            "shop",
            "pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 'events'::regclass",
        ) == 1
    });
    let out = s.path("shop.pgdump.zst");
    let mut snap = snap_to_file(pg.url("shop"), &out).spawn();
    let own_argv = format!(
        "{}\0{}\0-o\0{}\0",
        bin("dbsnap").display(),
        pg.url("shop"),
        out.display()
    );
    let client = format!("-d {}", pg.url("shop"));
    wait_until("pg_dump to start", Duration::from_secs(60), || {
        argv_containing(&client, own_argv.as_bytes())
            .iter()
            .any(|a| a.contains("--snapshot"))
    });

    Cmd::new("kill")
        .arg("-INT")
        .arg(snap.id().to_string())
        .succeeds();
    let status = snap.wait().expect("dbsnap");
    assert_eq!(status.code(), Some(130), "dbsnap ended with {status:?}");
    wait_until("pg_dump and psql to end", Duration::from_secs(60), || {
        argv_containing(&client, own_argv.as_bytes()).is_empty()
    });
    assert!(
        !out.exists(),
        "an interrupted snapshot left {}",
        out.display()
    );
    assert_eq!(temporaries(s.dir.path()), Vec::<PathBuf>::new());
    dbsafe_tests::kill_and_reap(&mut locker);
}
