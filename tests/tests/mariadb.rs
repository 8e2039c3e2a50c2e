//! The MySQL/MariaDB engine against real MariaDB servers: one throwaway
//! `mariadbd` per test (see `harness/mariadb.rs`).

use dbsafe_tests::mariadb::{client_bin, encode, Server, CLIENT_PACKAGE};
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
    assert_eq!(found.len(), 1, "expected one {prefix}* artifact: {found:?}");
    found.into_iter().next().expect("one")
}

/// Routines, triggers, events and views of a database, for comparisons.
fn objects(m: &Server, db: &str) -> String {
    m.sql(
        db,
        "SELECT routine_type, routine_name FROM information_schema.routines WHERE routine_schema = DATABASE() ORDER BY 2;\n\
         SELECT 'TRIGGER', trigger_name FROM information_schema.triggers WHERE trigger_schema = DATABASE() ORDER BY 2;\n\
         SELECT 'EVENT', event_name FROM information_schema.events WHERE event_schema = DATABASE() ORDER BY 2;\n\
         SELECT 'VIEW', table_name FROM information_schema.views WHERE table_schema = DATABASE() ORDER BY 2;\n",
    )
}

#[test]
fn backup_verifies_at_every_level_and_restores_identically_into_another_database() {
    let s = Scene::new();
    let m = Server::start();
    m.fixture_db("shop", 300);
    let (key, public) = s.age_key("key.txt");
    let art = s.path("shop.sql.zst.age");
    Cmd::tool("dbsnap")
        .arg(m.url("shop"))
        .arg("-o")
        .arg(&art)
        .arg("-r")
        .arg(&public)
        .succeeds();

    let meta = meta_of(&art);
    assert_eq!(meta["engine"], "mysql");
    assert_eq!(meta["payload"], "sql");
    assert_eq!(meta["database"], "shop");
    assert_eq!(meta["source"], m.url("shop"));
    assert!(
        meta["engine_version"]
            .as_str()
            .is_some_and(|v| v.contains("MariaDB")),
        "{}",
        meta["engine_version"]
    );
    assert_eq!(meta_counts(&meta), m.counts("shop"));
    assert_eq!(rows_of(&meta, "customers"), 300);
    assert_eq!(rows_of(&meta, "empty_table"), 0);
    assert_eq!(rows_of(&meta, "odd name, (x)"), 3);
    assert_eq!(meta_counts(&meta).len(), 6, "{meta}");

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
        .arg(m.server_url())
        .arg(&art)
        .succeeds();
    let rec = &r.json()[0];
    assert_eq!(rec["result"], "pass", "{rec}");
    assert_eq!(rec["integrity_score"], 1.0, "{rec}");
    assert_eq!(rec["tables"].as_array().map(Vec::len), Some(6), "{rec}");
    let dbs = m.databases();
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
        .arg(m.url("shop_restored"))
        .arg("--create")
        .succeeds();
    assert_eq!(m.checksums("shop_restored"), m.checksums("shop"));
    assert_eq!(m.digests("shop_restored"), m.digests("shop"));
    assert_eq!(objects(&m, "shop_restored"), objects(&m, "shop"));
    // The trigger works in the copy.
    m.sql(
        "shop_restored",
        "INSERT INTO orders(customer_id, total) VALUES (1, 1);",
    );
    assert_eq!(m.count("shop_restored", "audit_log"), 301);
}

#[test]
fn artifact_restores_with_age_zstd_and_the_mariadb_client_alone() {
    require("age", "the Debian package age");
    require("zstd", "the Debian package zstd");
    let s = Scene::new();
    let m = Server::start();
    m.fixture_db("shop", 200);
    let (key, public) = s.age_key("key.txt");
    let art = s.path("shop.sql.zst.age");
    Cmd::tool("dbsnap")
        .arg(m.url("shop"))
        .arg("-o")
        .arg(&art)
        .arg("-r")
        .arg(&public)
        .succeeds();
    m.sql("", "CREATE DATABASE plain;");
    Cmd::sh(&format!(
        "age -d -i '{}' '{}' | zstd -d | '{}' --no-defaults --socket='{}' -uroot plain",
        key.display(),
        art.display(),
        client_bin("mariadb").display(),
        m.sock.display()
    ))
    .succeeds();
    assert_eq!(m.checksums("plain"), m.checksums("shop"));
    assert_eq!(objects(&m, "plain"), objects(&m, "shop"));
}

const WRITER_SQL: &str = "CREATE PROCEDURE writer() BEGIN
  DECLARE deadline DATETIME DEFAULT NOW() + INTERVAL 60 SECOND;
  REPEAT
    INSERT INTO events(kind) VALUES ('writer');
    INSERT INTO orders(customer_id, total) VALUES (1, 1);
    DO SLEEP(0.002);
  UNTIL NOW() > deadline OR (SELECT stop FROM writer_control) END REPEAT;
END";

#[test]
fn recorded_row_counts_are_those_of_the_dump_while_a_writer_inserts() {
    let s = Scene::new();
    let m = Server::start();
    m.fixture_db("shop", 30_000);
    m.sql(
        "shop",
        &format!(
            "CREATE TABLE writer_control(stop BOOLEAN NOT NULL);\nINSERT INTO writer_control VALUES (false);\n\
             DELIMITER //\n{WRITER_SQL}//\nDELIMITER ;\n"
        ),
    );
    // autocommit: each insert is its own transaction.
    let mut writer = m.client("shop").arg("-e").arg("CALL writer();").spawn();
    wait_until("the writer to start", || {
        m.count("shop", "events WHERE kind = 'writer'") > 20
    });

    let art = s.path("shop.sql.zst");
    let snap = Cmd::tool("dbsnap")
        .arg(m.url("shop"))
        .arg("-o")
        .arg(&art)
        .run();
    let after_snap = m.count("shop", "events");
    m.sql("shop", "UPDATE writer_control SET stop = true;");
    let status = writer.wait().expect("writer");
    assert!(
        snap.out.status.success(),
        "dbsnap failed:\n{}",
        snap.stderr()
    );
    assert!(status.success(), "the writer failed");

    let meta = meta_of(&art);
    let started = meta["started_at"].as_str().expect("started_at");
    let finished = meta["finished_at"].as_str().expect("finished_at");
    let utc = |t: &str| t[..26].replace('T', " ");
    // The server runs in UTC, like the metadata's times.
    let during = m.count(
        "shop",
        &format!(
            "events WHERE kind = 'writer' AND at > '{}' AND at < '{}'",
            utc(started),
            utc(finished)
        ),
    );
    assert!(during > 0, "the writer inserted nothing while dbsnap ran");
    assert!(
        rows_of(&meta, "events") <= after_snap && after_snap < m.count("shop", "events"),
        "the writer went on after the snapshot"
    );

    Cmd::tool("dbrestore")
        .arg(&art)
        .arg("--target")
        .arg(m.url("copy"))
        .arg("--create")
        .succeeds();
    assert_eq!(m.counts("copy"), meta_counts(&meta));
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
    let m = Server::start();
    m.fixture_db("shop", 20_000);
    let secrets = [
        m.password.clone(),
        encode(&m.password),
        m.password[..11].to_string(),
    ];

    // Shims that record each client tool's argv (and whether MYSQL_PWD was set) and run the real one.
    let shims = s.path("shims");
    std::fs::create_dir(&shims).expect("shims");
    let argv_log = s.path("argv.log");
    for tool in ["mariadb-dump", "mariadb"] {
        let real = client_bin(tool);
        executable(
            &shims.join(tool),
            &format!(
                "#!/bin/sh\nline=\"{tool} mysql_pwd=${{MYSQL_PWD:+set}} argv: $*\"\nprintf '%s\\n' \"$line\" >> '{}'\nexec '{}' \"$@\"\n",
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

    let mut child = Command::new(bin("dbsnap"))
        .env("DBSAFE_CONFIG", "/dev/null")
        .env_remove("DBSAFE_STORE")
        .env_remove("DBSAFE_ENV")
        .env_remove("DBSAFE_RECIPIENTS")
        .env_remove("DBSAFE_RECIPIENTS_FILE")
        .env_remove("DBSAFE_PASSPHRASE_FILE")
        .env_remove("DBSAFE_COMPRESS")
        .env("PATH", &path)
        .arg(m.password_url("shop"))
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
        m.password_url("shop"),
        store.display()
    );
    let mut exposed = Vec::new();
    let mut samples = 0;
    let mut seen_client = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        samples += 1;
        seen_client |= !argv_containing("--single-transaction", own_argv.as_bytes()).is_empty();
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
        "no sample of /proc in {samples} caught mariadb-dump running"
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
        .arg(m.password_url(""))
        .succeeds();
    let restore = Cmd::tool("dbrestore")
        .env("PATH", &path)
        .arg("--store")
        .arg(&store)
        .arg("--latest")
        .arg("--target")
        .arg(m.password_url("copy"))
        .arg("--create")
        .succeeds();
    assert_eq!(m.checksums("copy"), m.checksums("shop"));
    let wrong = Cmd::tool("dbsnap")
        .arg(format!(
            "mysql://app:Wrong-{}@127.0.0.1:{}/shop",
            &m.password[3..11],
            m.port
        ))
        .arg("-o")
        .arg(s.path("wrong.sql.zst"))
        .fails_with_code(1)
        .stderr_has("Access denied");
    assert!(
        !wrong.stderr().contains("Wrong-"),
        "the wrong password is in the message:\n{}",
        wrong.stderr()
    );

    let argv = std::fs::read_to_string(&argv_log).expect("argv log");
    for tool in ["mariadb-dump", "mariadb"] {
        assert!(
            argv.lines().any(|l| l.starts_with(&format!("{tool} "))),
            "{tool} never ran through the shim:\n{argv}"
        );
    }
    assert!(
        argv.lines().all(|l| l.contains("mysql_pwd=set")),
        "a client connected without MYSQL_PWD:\n{argv}"
    );

    let art = store_artifact(&store, "default_shop_full_");
    let meta = std::fs::read_to_string(format!("{}.meta.json", art.display())).expect("meta");
    let audit = std::fs::read_to_string(store.join("audit.log")).expect("audit log");
    assert_eq!(
        serde_json::from_str::<Value>(&meta).expect("json")["source"],
        format!("mariadb://app@127.0.0.1:{}/shop", m.port).as_str()
    );
    assert!(
        audit.contains(&format!("mariadb://app@127.0.0.1:{}/copy", m.port)),
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
fn restore_over_a_non_empty_database_needs_clean_and_confirmation_and_takes_a_safety_backup() {
    let s = Scene::new();
    let m = Server::start();
    m.fixture_db("shop", 200);
    m.fixture_db("prod", 50);
    m.sql("prod", "CREATE TABLE only_in_prod(x INT);");
    let old_counts = m.counts("prod");
    let before = m.checksums("prod");
    let store = s.path("store");
    Cmd::tool("dbsnap")
        .arg(m.url("shop"))
        .arg("--to")
        .arg(&store)
        .succeeds();
    let select = |c: Cmd| {
        c.arg("--store")
            .arg(&store)
            .args(["--latest", "--database", "shop"])
    };

    select(Cmd::tool("dbrestore"))
        .arg("--target")
        .arg(m.url("prod"))
        .fails_with_code(4)
        .stderr_has("not empty")
        .stderr_has("--clean");
    select(Cmd::tool("dbrestore"))
        .arg("--target")
        .arg(m.url("prod"))
        .arg("--clean")
        .fails_with_code(4)
        .stderr_has("--yes");
    assert_eq!(m.checksums("prod"), before);
    assert_eq!(
        artifacts(&store).len(),
        1,
        "a refused restore took a safety backup"
    );
    assert!(
        !store.join("audit.log").exists(),
        "a refusal was audited as a restore"
    );

    select(Cmd::tool("dbrestore"))
        .arg("--target")
        .arg(m.url("prod"))
        .args(["--clean", "--yes"])
        .succeeds();
    assert_eq!(m.checksums("prod"), m.checksums("shop"));
    assert!(
        !m.tables("prod").contains(&"only_in_prod".to_string()),
        "--clean left a table the backup does not have"
    );

    let safety = store_artifact(&store, "default-safety_prod_full_");
    assert_eq!(meta_counts(&meta_of(&safety)), old_counts);
    let audit = std::fs::read_to_string(store.join("audit.log")).expect("audit log");
    let entry: Value =
        serde_json::from_str(audit.lines().last().expect("an entry")).expect("json line");
    assert_eq!(entry["action"], "restore");
    assert_eq!(entry["result"], "success");
    assert_eq!(entry["target"], m.url("prod"));

    // The safety backup brings the old contents back.
    Cmd::tool("dbrestore")
        .arg(&safety)
        .arg("--target")
        .arg(m.url("prod"))
        .args(["--clean", "--yes", "--no-safety-backup"])
        .succeeds();
    assert_eq!(m.checksums("prod"), before);
}

#[test]
fn table_option_restores_only_that_table() {
    let s = Scene::new();
    let m = Server::start();
    m.fixture_db("shop", 200);
    let art = s.path("shop.sql.zst");
    Cmd::tool("dbsnap")
        .arg(m.url("shop"))
        .arg("-o")
        .arg(&art)
        .succeeds();
    let of = |v: Vec<(String, String)>, t: &str| v.into_iter().find(|(n, _)| n == t);

    Cmd::tool("dbrestore")
        .arg(&art)
        .arg("--target")
        .arg(m.url("part"))
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
    Cmd::tool("dbrestore")
        .arg(&art)
        .arg("--target")
        .arg(m.url("part"))
        .args(["--table", "odd name, (x)", "--yes", "--no-safety-backup"])
        .succeeds();
    assert_eq!(
        m.counts("part"),
        vec![
            ("customers".to_string(), 10),
            ("odd name, (x)".to_string(), 3)
        ]
    );

    Cmd::tool("dbrestore")
        .arg(&art)
        .arg("--target")
        .arg(m.url("part"))
        .args(["--table", "nope", "--yes", "--no-safety-backup"])
        .fails_with_code(3)
        .stderr_has("not in the backup");
}

#[test]
fn a_truncated_dump_fails_verification_and_is_not_restored() {
    let s = Scene::new();
    let m = Server::start();
    m.fixture_db("shop", 2000);
    let full = s.path("shop.sql");
    Cmd::tool("dbsnap")
        .arg(m.url("shop"))
        .args(["--compress", "none", "-o"])
        .arg(&full)
        .succeeds();
    let bytes = std::fs::read(&full).expect("dump");
    let cut = s.path("cut.sql");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).expect("write");
    let r = Cmd::tool("dbverify")
        .args(["--level", "full", "--json"])
        .arg(&cut)
        .fails_with_code(1);
    assert!(
        r.stdout().contains("Dump completed"),
        "the report does not say the dump is incomplete:\n{}",
        r.stdout()
    );
    Cmd::tool("dbrestore")
        .arg(&cut)
        .arg("--target")
        .arg(m.url("cut"))
        .arg("--create")
        .fails_with_code(1)
        .stderr_has("failed verification");
    assert!(!m.databases().contains(&"cut".to_string()));
}

#[test]
fn a_missing_database_is_not_found_without_create() {
    let s = Scene::new();
    let m = Server::start();
    m.fixture_db("shop", 10);
    let art = s.path("shop.sql.zst");
    Cmd::tool("dbsnap")
        .arg(m.url("shop"))
        .arg("-o")
        .arg(&art)
        .succeeds();
    Cmd::tool("dbrestore")
        .arg(&art)
        .arg("--target")
        .arg(m.url("fresh"))
        .fails_with_code(3)
        .stderr_has("--create");
    assert!(!m.databases().contains(&"fresh".to_string()));
    let out = s.path("nope.sql.zst");
    Cmd::tool("dbsnap")
        .arg(m.url("nope"))
        .arg("-o")
        .arg(&out)
        .fails_with_code(1)
        .stderr_has("Unknown database");
    assert!(!out.exists());
    assert_eq!(temporaries(s.dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn a_missing_client_tool_is_named_with_its_package() {
    let s = Scene::new();
    let empty = s.path("empty");
    std::fs::create_dir(&empty).expect("dir");
    let url = "mysql://root@127.0.0.1:1/shop";
    Cmd::tool("dbsnap")
        .env("PATH", &empty)
        .arg(url)
        .arg("-o")
        .arg(s.path("x.sql.zst"))
        .fails_with_code(2)
        .stderr_has("mariadb-dump is not installed")
        .stderr_has("mariadb-client");
    s.write("a.sql", "-- MariaDB dump\n-- Dump completed\n");
    Cmd::tool("dbrestore")
        .env("PATH", &empty)
        .arg(s.path("a.sql"))
        .arg("--target")
        .arg(url)
        .fails_with_code(2)
        .stderr_has("mariadb is not installed")
        .stderr_has("mariadb-client");
    let _ = CLIENT_PACKAGE;
}
