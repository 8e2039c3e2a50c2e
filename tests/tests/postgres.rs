//! The PostgreSQL engine against real PostgreSQL 15 servers: one throwaway
//! cluster per test (see `harness/pg.rs`).

use dbsafe_tests::pg::{encode, Cluster};
use dbsafe_tests::{artifacts, bin, require, temporaries, Cmd, Scene};
use serde_json::Value;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn meta_of(artifact: &Path) -> Value {
    let path = format!("{}.meta.json", artifact.display());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    serde_json::from_str(&text).expect("metadata is JSON")
}

fn meta_counts(meta: &Value) -> Vec<(String, u64)> {
    meta["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().expect("name").to_string(),
                t["rows"].as_u64().expect("rows"),
            )
        })
        .collect()
}

fn rows_of(meta: &Value, table: &str) -> u64 {
    meta_counts(meta)
        .into_iter()
        .find(|(t, _)| t == table)
        .unwrap_or_else(|| panic!("{table} is not in the metadata"))
        .1
}

/// A TCP port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn executable(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The one artifact in a store whose name starts with `prefix`.
fn store_artifact(store: &Path, prefix: &str) -> PathBuf {
    let found: Vec<PathBuf> = artifacts(store)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {prefix}* artifact in {}: {found:?}",
        store.display()
    );
    found.into_iter().next().expect("one")
}

#[test]
fn backup_verifies_at_every_level_and_restores_identically_into_another_database() {
    let s = Scene::new();
    let pg = Cluster::start();
    pg.fixture_db("shop", 300);
    let (key, public) = s.age_key("key.txt");
    let art = s.path("shop.pgdump.zst.age");
    Cmd::tool("dbsnap")
        .arg(pg.url("shop"))
        .arg("-o")
        .arg(&art)
        .arg("-r")
        .arg(&public)
        .succeeds();

    let meta = meta_of(&art);
    assert_eq!(meta["engine"], "postgres");
    assert_eq!(meta["payload"], "pgdump");
    assert_eq!(meta["compression"], "zstd");
    assert_eq!(meta["encryption"], "age");
    assert_eq!(meta["database"], "shop");
    assert_eq!(meta["source"], pg.url("shop"));
    assert!(
        meta["engine_version"]
            .as_str()
            .expect("version")
            .starts_with("15."),
        "{}",
        meta["engine_version"]
    );
    assert_eq!(meta_counts(&meta), pg.counts("shop"));
    assert_eq!(
        meta_counts(&meta).len(),
        4,
        "customers, events, orders, shop.items"
    );
    assert!(std::fs::read(&art)
        .expect("artifact")
        .starts_with(b"age-encryption.org/v1"));

    for level in ["quick", "full"] {
        Cmd::tool("dbverify")
            .args(["--level", level, "-i"])
            .arg(&key)
            .arg(&art)
            .succeeds();
    }
    let r = Cmd::tool("dbverify")
        .args(["--level", "restore", "--json", "-i"])
        .arg(&key)
        .arg("--scratch")
        .arg(pg.server_url())
        .arg(&art)
        .succeeds();
    let rec = &r.json()[0];
    assert_eq!(rec["result"], "pass", "{rec}");
    assert_eq!(rec["integrity_score"], 1.0, "{rec}");
    assert_eq!(rec["tables"].as_array().map(Vec::len), Some(4), "{rec}");
    let dbs = pg.databases();
    assert!(
        !dbs.iter().any(|d| d.starts_with("dbsafe_verify_")),
        "scratch database left behind: {dbs:?}"
    );

    Cmd::tool("dbverify")
        .args(["--level", "restore", "-i"])
        .arg(&key)
        .arg(&art)
        .fails_with_code(2)
        .stderr_has("--scratch");

    Cmd::tool("dbrestore")
        .arg("-i")
        .arg(&key)
        .arg(&art)
        .arg("--target")
        .arg(pg.url("shop_restored"))
        .arg("--create")
        .succeeds();
    assert_eq!(pg.digests("shop_restored"), pg.digests("shop"));
    // More than table contents: the sequence, the view, the index and the foreign key.
    assert_eq!(
        pg.scalar("shop_restored", "SELECT last_value FROM invoice_no;"),
        "1234"
    );
    assert_eq!(
        pg.count("shop_restored", "big_orders"),
        pg.count("shop", "big_orders")
    );
    assert_eq!(
        pg.count(
            "shop_restored",
            "pg_indexes WHERE indexname = 'orders_customer_idx'"
        ),
        1
    );
    assert_eq!(
        pg.count("shop_restored", "pg_constraint WHERE contype = 'f'"),
        1
    );
}

const WRITER_SQL: &str = "DO $$
DECLARE deadline timestamptz := clock_timestamp() + interval '60 seconds';
BEGIN
  LOOP
    INSERT INTO events(kind) VALUES ('writer');
    INSERT INTO orders(customer_id, total) VALUES (1, 1);
    COMMIT;
    EXIT WHEN clock_timestamp() > deadline OR (SELECT stop FROM writer_control);
    PERFORM pg_sleep(0.002);
  END LOOP;
END $$;";

#[test]
fn recorded_row_counts_are_those_of_the_dump_while_a_writer_inserts() {
    let s = Scene::new();
    let pg = Cluster::start();
    pg.fixture_db("shop", 20_000);
    pg.psql("shop", "CREATE TABLE writer_control(stop boolean NOT NULL); INSERT INTO writer_control VALUES (false);");
    let mut writer = pg.psql_cmd("shop").arg("-c").arg(WRITER_SQL).spawn();
    wait_until("the writer to start", || {
        pg.count("shop", "events WHERE kind = 'writer'") > 20
    });

    let art = s.path("shop.pgdump.zst");
    let snap = Cmd::tool("dbsnap")
        .arg(pg.url("shop"))
        .arg("-o")
        .arg(&art)
        .run();
    pg.psql("shop", "UPDATE writer_control SET stop = true;");
    let status = writer.wait().expect("writer");
    assert!(
        snap.out.status.success(),
        "dbsnap failed:\n{}",
        snap.stderr()
    );
    assert!(status.success(), "the writer failed");

    let meta = meta_of(&art);
    assert_eq!(
        meta["extra"]["row_counts"], "from the dump stream",
        "counted off the stream, not by a second scan"
    );
    let during = pg.count(
        "shop",
        &format!(
            "events WHERE kind = 'writer' AND at > '{}' AND at < '{}'",
            meta["started_at"].as_str().expect("started_at"),
            meta["finished_at"].as_str().expect("finished_at")
        ),
    );
    assert!(during > 0, "the writer inserted nothing while dbsnap ran");
    assert!(
        rows_of(&meta, "public.events") < pg.count("shop", "events"),
        "the writer went on after the snapshot"
    );

    Cmd::tool("dbrestore")
        .arg(&art)
        .arg("--target")
        .arg(pg.url("copy"))
        .arg("--create")
        .succeeds();
    assert_eq!(pg.counts("copy"), meta_counts(&meta));
}

#[test]
fn artifact_restores_with_age_zstd_and_pg_restore_alone() {
    require("age", "the Debian package age");
    require("zstd", "the Debian package zstd");
    require("pg_restore", "the Debian package postgresql-client");
    let s = Scene::new();
    let pg = Cluster::start();
    pg.fixture_db("shop", 300);
    let (key, public) = s.age_key("key.txt");
    let art = s.path("shop.pgdump.zst.age");
    Cmd::tool("dbsnap")
        .arg(pg.url("shop"))
        .arg("-o")
        .arg(&art)
        .arg("-r")
        .arg(&public)
        .succeeds();

    pg.create_db("plain");
    Cmd::sh(&format!(
        "age -d -i '{}' '{}' | zstd -d | pg_restore -d '{}'",
        key.display(),
        art.display(),
        pg.url("plain")
    ))
    .succeeds();
    assert_eq!(pg.digests("plain"), pg.digests("shop"));
}

/// Every process's argv that contains `needle`, but `except`.
fn argv_containing(needle: &str, except: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in rd.flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
            let argv = String::from_utf8_lossy(&raw).replace('\0', " ");
            if raw != except && argv.contains(needle) {
                found.push(argv);
            }
        }
    }
    found
}

#[test]
fn a_password_in_the_url_reaches_no_argv_metadata_audit_log_or_message() {
    let s = Scene::new();
    let pg = Cluster::start();
    pg.fixture_db("shop", 20_000);
    let secrets = [
        pg.password.clone(),
        encode(&pg.password),
        pg.password[..11].to_string(),
    ];

    // Shims that record each client tool's argv (and whether PGPASSWORD was set) and run the real one.
    let shims = s.path("shims");
    std::fs::create_dir(&shims).expect("shims");
    let argv_log = s.path("argv.log");
    for tool in ["pg_dump", "pg_restore", "psql"] {
        let real = require(tool, "the Debian package postgresql-client");
        executable(
            &shims.join(tool),
            &format!(
                "#!/bin/sh\nline=\"{tool} pgpassword=${{PGPASSWORD:+set}} argv: $*\"\nprintf '%s\\n' \"$line\" >> '{}'\nexec '{}' \"$@\"\n",
                argv_log.display(),
                real.display()
            ),
        );
    }
    let path = format!(
        "{}:{}",
        shims.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let store = s.path("store");

    // The snapshot, sampling every process's argv while it runs.
    let mut child = Command::new(bin("dbsnap"))
        .env("DBSAFE_CONFIG", "/dev/null")
        .env_remove("DBSAFE_STORE")
        .env_remove("DBSAFE_ENV")
        .env_remove("DBSAFE_RECIPIENTS")
        .env_remove("DBSAFE_RECIPIENTS_FILE")
        .env_remove("DBSAFE_PASSPHRASE_FILE")
        .env_remove("DBSAFE_COMPRESS")
        .env("PATH", &path)
        .arg(pg.password_url("shop"))
        .arg("--to")
        .arg(&store)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dbsnap");
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let own_argv = format!(
        "{}\0{}\0--to\0{}\0",
        bin("dbsnap").display(),
        pg.password_url("shop"),
        store.display()
    );
    let mut exposed = Vec::new();
    let mut samples = 0;
    // How the clients are told where to connect: seeing it proves the sampling saw them.
    let client_url = format!("postgresql://app@127.0.0.1:{}/shop", pg.port);
    let mut seen_client = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        samples += 1;
        seen_client |= !argv_containing(&client_url, own_argv.as_bytes()).is_empty();
        // dbsnap's own argv holds the URL its caller gave it (and so does a
        // child between fork and exec); the client tools' argv must not.
        for secret in &secrets {
            for argv in argv_containing(secret, own_argv.as_bytes()) {
                if !exposed.contains(&argv) {
                    exposed.push(argv);
                }
            }
        }
    };
    let snap_stderr = stderr_reader.join().expect("stderr thread");
    assert!(status.success(), "dbsnap failed:\n{snap_stderr}");
    assert!(
        seen_client,
        "no sample of /proc in {samples} caught a client tool running"
    );
    assert!(
        exposed.is_empty(),
        "the password is in a process's argv: {exposed:?}"
    );

    let verify = Cmd::tool("dbverify")
        .env("PATH", &path)
        .args(["--level", "restore", "--store"])
        .arg(&store)
        .arg("--latest")
        .arg("--scratch")
        .arg(pg.password_url("postgres"))
        .succeeds();
    let restore = Cmd::tool("dbrestore")
        .env("PATH", &path)
        .arg("--store")
        .arg(&store)
        .arg("--latest")
        .arg("--target")
        .arg(pg.password_url("copy"))
        .arg("--create")
        .succeeds();
    assert_eq!(pg.digests("copy"), pg.digests("shop"));
    let wrong = Cmd::tool("dbsnap")
        .arg(format!(
            "postgresql://app:Wrong-{}@127.0.0.1:{}/shop",
            &pg.password[3..11],
            pg.port
        ))
        .arg("-o")
        .arg(s.path("wrong.pgdump.zst"))
        .fails_with_code(1)
        .stderr_has("password authentication failed");
    assert!(
        !wrong.stderr().contains("Wrong-"),
        "the wrong password is in the message:\n{}",
        wrong.stderr()
    );

    let argv = std::fs::read_to_string(&argv_log).expect("argv log");
    for tool in ["pg_dump", "pg_restore", "psql"] {
        assert!(
            argv.lines().any(|l| l.starts_with(&format!("{tool} "))),
            "{tool} never ran through the shim:\n{argv}"
        );
    }
    // Every client that connects (`-d`; `pg_restore --list` does not) got the password from the environment.
    assert!(
        argv.lines()
            .filter(|l| l.contains(" -d "))
            .all(|l| l.contains("pgpassword=set")),
        "a client connected without PGPASSWORD:\n{argv}"
    );

    let art = store_artifact(&store, "default_shop_full_");
    let meta = std::fs::read_to_string(format!("{}.meta.json", art.display())).expect("meta");
    let audit = std::fs::read_to_string(store.join("audit.log")).expect("audit log");
    let expected_source = format!("postgresql://app@127.0.0.1:{}/shop", pg.port);
    assert_eq!(
        serde_json::from_str::<Value>(&meta).expect("json")["source"],
        expected_source.as_str()
    );
    assert!(
        audit.contains(&format!("postgresql://app@127.0.0.1:{}/copy", pg.port)),
        "no audit entry:\n{audit}"
    );
    let texts = [
        ("argv log", argv),
        ("metadata", meta),
        ("audit log", audit),
        ("dbsnap stderr", snap_stderr),
        ("dbverify stderr", verify.stderr()),
        ("dbrestore stderr", restore.stderr()),
    ];
    for (what, text) in &texts {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "the password ({secret}) is in the {what}:\n{text}"
            );
        }
    }
}

#[test]
fn restore_over_a_non_empty_database_is_refused_without_clean_or_without_confirmation() {
    let s = Scene::new();
    let pg = Cluster::start();
    pg.fixture_db("shop", 200);
    pg.fixture_db("prod", 50);
    let store = s.path("store");
    Cmd::tool("dbsnap")
        .arg(pg.url("shop"))
        .arg("--to")
        .arg(&store)
        .succeeds();
    let before = pg.digests("prod");

    Cmd::tool("dbrestore")
        .arg("--store")
        .arg(&store)
        .arg("--latest")
        .arg("--target")
        .arg(pg.url("prod"))
        .fails_with_code(4)
        .stderr_has("not empty")
        .stderr_has("--clean");
    assert_eq!(pg.digests("prod"), before);

    // No --yes and no terminal to ask on.
    Cmd::tool("dbrestore")
        .arg("--store")
        .arg(&store)
        .arg("--latest")
        .arg("--target")
        .arg(pg.url("prod"))
        .arg("--clean")
        .fails_with_code(4)
        .stderr_has("--yes");
    assert_eq!(pg.digests("prod"), before);
    assert_eq!(
        artifacts(&store).len(),
        1,
        "a refused restore took a safety backup"
    );
}

#[test]
fn restore_with_clean_and_yes_takes_a_safety_backup_and_writes_the_audit_log() {
    let s = Scene::new();
    let pg = Cluster::start();
    pg.fixture_db("shop", 200);
    pg.fixture_db("prod", 50);
    let old_counts = pg.counts("prod");
    let store = s.path("store");
    Cmd::tool("dbsnap")
        .arg(pg.url("shop"))
        .arg("--to")
        .arg(&store)
        .succeeds();

    Cmd::tool("dbrestore")
        .arg("--store")
        .arg(&store)
        .arg("--latest")
        .arg("--database")
        .arg("shop")
        .arg("--target")
        .arg(pg.url("prod"))
        .args(["--clean", "--yes"])
        .succeeds();
    assert_eq!(pg.digests("prod"), pg.digests("shop"));

    let safety = store_artifact(&store, "default-safety_prod_full_");
    let safety_meta = meta_of(&safety);
    assert_eq!(
        meta_counts(&safety_meta),
        old_counts,
        "the safety backup holds the old contents"
    );
    assert_eq!(safety_meta["source"], pg.url("prod"));

    let audit = std::fs::read_to_string(store.join("audit.log")).expect("audit log");
    let entry: Value =
        serde_json::from_str(audit.lines().last().expect("an entry")).expect("json line");
    assert_eq!(entry["action"], "restore");
    assert_eq!(entry["result"], "success");
    assert_eq!(entry["target"], pg.url("prod"));
    assert!(
        entry["details"]["safety_backup"]
            .as_str()
            .is_some_and(|b| b.contains("default-safety_prod_full_")),
        "{entry}"
    );
}

#[test]
fn an_unreachable_server_fails_with_the_connection_error() {
    let s = Scene::new();
    let port = closed_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/shop");
    let out = s.path("x.pgdump.zst");
    Cmd::tool("dbsnap")
        .arg(&url)
        .arg("-o")
        .arg(&out)
        .fails_with_code(1)
        .stderr_has("Connection refused")
        .stderr_has(&port.to_string());
    assert!(!out.exists(), "a failed snapshot left {}", out.display());
    assert_eq!(temporaries(s.dir.path()), Vec::<PathBuf>::new());

    s.write("a.pgdump", "PGDMP");
    Cmd::tool("dbrestore")
        .arg(s.path("a.pgdump"))
        .arg("--target")
        .arg(&url)
        .arg("--create")
        .fails_with_code(1)
        .stderr_has("Connection refused");
}

#[test]
fn a_missing_client_tool_is_named_with_its_package() {
    let s = Scene::new();
    // psql is there, pg_dump is not.
    let only_psql = s.path("only-psql");
    std::fs::create_dir(&only_psql).expect("dir");
    std::os::unix::fs::symlink(
        require("psql", "the Debian package postgresql-client"),
        only_psql.join("psql"),
    )
    .expect("symlink");
    let url = format!("postgres://postgres@127.0.0.1:{}/shop", closed_port());
    Cmd::tool("dbsnap")
        .env("PATH", &only_psql)
        .arg(&url)
        .arg("-o")
        .arg(s.path("x.pgdump.zst"))
        .fails_with_code(2)
        .stderr_has("pg_dump is not installed")
        .stderr_has("postgresql-client");

    let empty = s.path("empty");
    std::fs::create_dir(&empty).expect("dir");
    s.write("a.pgdump", "PGDMP");
    Cmd::tool("dbrestore")
        .env("PATH", &empty)
        .arg(s.path("a.pgdump"))
        .arg("--target")
        .arg(&url)
        .fails_with_code(2)
        .stderr_has("psql is not installed")
        .stderr_has("postgresql-client");
}

#[test]
fn table_option_restores_only_that_table() {
    let s = Scene::new();
    let pg = Cluster::start();
    pg.fixture_db("shop", 200);
    let art = s.path("shop.pgdump.zst");
    Cmd::tool("dbsnap")
        .arg(pg.url("shop"))
        .arg("-o")
        .arg(&art)
        .succeeds();

    Cmd::tool("dbrestore")
        .arg(&art)
        .arg("--target")
        .arg(pg.url("part"))
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
    Cmd::tool("dbrestore")
        .arg(&art)
        .arg("--target")
        .arg(pg.url("part"))
        .args(["--table", "shop.items", "--yes", "--no-safety-backup"])
        .succeeds();
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
    pg.fixture_db("shop", 200);
    pg.fixture_db("prod", 50);
    let store = s.path("store");
    Cmd::tool("dbsnap")
        .arg(pg.url("shop"))
        .arg("--to")
        .arg(&store)
        .succeeds();
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

    // Without --create, a missing database is not found (exit 3), not created.
    select(Cmd::tool("dbrestore"))
        .arg("--target")
        .arg(pg.url("fresh"))
        .fails_with_code(3)
        .stderr_has("--create");
    assert!(!pg.databases().contains(&"fresh".to_string()));
}

#[test]
fn sigint_during_a_snapshot_stops_the_client_tools_and_leaves_no_output() {
    let s = Scene::new();
    let pg = Cluster::start();
    pg.fixture_db("shop", 200);
    // A session holding an exclusive lock keeps pg_dump waiting, so the
    // interrupt surely comes while the client tools run.
    let mut locker = pg
        .psql_cmd("shop")
        .arg("-c")
        .arg("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);")
        .spawn();
    wait_until("the lock", || {
        pg.count(
            "shop",
            "pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 'events'::regclass",
        ) == 1
    });
    let out = s.path("shop.pgdump.zst");
    let mut snap = Cmd::tool("dbsnap")
        .arg(pg.url("shop"))
        .arg("-o")
        .arg(&out)
        .spawn();
    let own_argv = format!(
        "{}\0{}\0-o\0{}\0",
        bin("dbsnap").display(),
        pg.url("shop"),
        out.display()
    );
    let client = format!("-d {}", pg.url("shop"));
    wait_until("pg_dump to start", || {
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
    wait_until("pg_dump and psql to end", || {
        argv_containing(&client, own_argv.as_bytes()).is_empty()
    });
    assert!(
        !out.exists(),
        "an interrupted snapshot left {}",
        out.display()
    );
    assert_eq!(temporaries(s.dir.path()), Vec::<PathBuf>::new());
    let _ = locker.kill();
    let _ = locker.wait();
}
