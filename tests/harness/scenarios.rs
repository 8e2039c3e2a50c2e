//! The scenarios every engine goes through, written once against
//! [`TestDb`] and instantiated per engine with [`crate::scenarios!`]:
//!
//! ```ignore
//! dbsafe_tests::scenarios!(Cluster::start() =>
//!     restore_over_a_non_empty_target_is_refused_then_replaced_with_a_safety_backup_and_audit,
//! );
//! ```
//!
//! Scenarios that an engine's own test extends with engine-specific checks
//! return what they built (see [`backup_verifies_at_every_level_and_restores_identically`]).

use crate::testdb::{ConcurrentWrites, Passwords, TestDb};
use crate::{
    artifacts, audit_entries, bin, executable, meta_counts, meta_of, require, restore_file,
    rows_of, snap_to_file, snap_to_file_for, snap_to_store_for, store_artifact, temporaries,
    wait_until, Cmd, Scene,
};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Generates one `#[test]` per scenario, each on a database from `$start`.
#[macro_export]
macro_rules! scenarios {
    ($start:expr => $($scenario:ident),+ $(,)?) => {
        $(
            #[test]
            fn $scenario() {
                let db = $start;
                $crate::scenarios::$scenario(&db);
            }
        )+
    };
}

/// The scenarios of every engine whose artifacts its own tools restore, as
/// tests on databases from `$start`.
#[macro_export]
macro_rules! engine_scenarios {
    ($start:expr) => {
        $crate::scenarios!($start =>
            artifact_restores_with_age_zstd_and_the_engine_tools_alone,
            restore_over_a_non_empty_target_is_refused_then_replaced_with_a_safety_backup_and_audit,
        );
    };
}

/// [`engine_scenarios!`] and those of engines on a server with password logins.
#[macro_export]
macro_rules! server_scenarios {
    ($start:expr) => {
        $crate::engine_scenarios!($start);
        $crate::scenarios!($start =>
            a_password_in_the_url_reaches_no_argv_metadata_audit_log_or_message,
            a_restore_into_a_missing_database_needs_create,
        );
    };
}

/// An encrypted backup that passed the scenario, for engine-specific checks.
pub struct Backup {
    /// The test's directory.
    pub scene: Scene,
    /// The age identity that decrypts the artifact.
    pub key: PathBuf,
    /// The artifact (sidecars beside it).
    pub art: PathBuf,
    /// Its metadata.
    pub meta: Value,
    /// The database it was restored into (`<name>_restored`).
    pub restored: String,
}

impl Backup {
    /// The engine version the metadata records; fails when it records none.
    pub fn engine_version(&self) -> &str {
        self.meta["engine_version"]
            .as_str()
            .unwrap_or_else(|| panic!("no engine_version in {}", self.meta))
    }
}

/// `-r KEY` snapshot of `name` (sample of `rows` rows): the metadata
/// describes it, it passes `--level quick`, `full` and `restore` (with a
/// scratch server where the engine has one, leaving no scratch database
/// behind, and refused without one), and restores into another database
/// with the same contents.
pub fn backup_verifies_at_every_level_and_restores_identically<D: TestDb>(
    db: &D,
    name: &str,
    rows: u64,
) -> Backup {
    let s = Scene::new();
    db.fixture(name, rows);
    let (key, public) = s.age_key("key.txt");
    let art = s.path(&format!("{name}.{}.zst.age", D::ENGINE.payload));
    snap_to_file_for(db.url(name), &art, &public).succeeds();

    let meta = meta_of(&art);
    assert_eq!(meta["engine"], D::ENGINE.name);
    assert_eq!(meta["payload"], D::ENGINE.payload);
    assert_eq!(meta["compression"], "zstd");
    assert_eq!(meta["encryption"], "age");
    assert_eq!(meta["database"], name);
    assert_eq!(meta["source"], db.url(name));
    let counts = db.counts(name);
    assert!(!counts.is_empty(), "the sample has tables");
    assert_eq!(meta_counts(&meta), counts);
    assert!(std::fs::read(&art)
        .expect("artifact")
        .starts_with(b"age-encryption.org/v1"));

    let verify = |level: &str| {
        Cmd::tool("dbverify")
            .args(["--level", level, "--json", "-i"])
            .arg(&key)
            .arg(&art)
    };
    for level in ["quick", "full", "restore"] {
        let mut cmd = verify(level);
        if level == "restore" && D::ENGINE.server {
            cmd = cmd.arg("--scratch").arg(db.scratch_url());
        }
        let rec = &cmd.succeeds().json()[0];
        assert_eq!(rec["result"], "pass", "{rec}");
        assert_eq!(rec["level"], level, "{rec}");
        assert_eq!(rec["integrity_score"], 1.0, "{rec}");
        if level == "restore" {
            assert_eq!(
                rec["tables"].as_array().map(Vec::len),
                Some(counts.len()),
                "{rec}"
            );
        }
    }
    if D::ENGINE.server {
        let dbs = db.databases();
        assert!(
            !dbs.iter().any(|d| d.starts_with("dbsafe_verify_")),
            "scratch database left behind: {dbs:?}"
        );
        verify("restore").fails_with(2, "--scratch");
    }

    let restored = format!("{name}_restored");
    let mut restore = Cmd::tool("dbrestore")
        .arg("-i")
        .arg(&key)
        .arg(&art)
        .arg("--target")
        .arg(db.url(&restored));
    if D::ENGINE.server {
        restore = restore.arg("--create");
    }
    restore.succeeds();
    assert_eq!(db.contents(&restored), db.contents(name));
    assert_eq!(temporaries(s.dir.path()), Vec::<PathBuf>::new());
    Backup {
        scene: s,
        key,
        art,
        meta,
        restored,
    }
}

/// A new test directory holding `shop.PAYLOAD.zst`, a plain snapshot of
/// the database `shop`, which it first creates on `db` with `rows` sample rows.
pub fn plain_snapshot_of_shop<D: TestDb>(db: &D, rows: u64) -> (Scene, PathBuf) {
    let s = Scene::new();
    db.fixture("shop", rows);
    let art = s.path(&format!("shop.{}.zst", D::ENGINE.payload));
    snap_to_file(db.url("shop"), &art).succeeds();
    (s, art)
}

/// An encrypted, compressed artifact is the engine's own format underneath:
/// `age -d | zstd -d |` the engine's own tools restore it.
pub fn artifact_restores_with_age_zstd_and_the_engine_tools_alone<D: TestDb>(db: &D) {
    require("age", "the Debian package age");
    require("zstd", "the Debian package zstd");
    let s = Scene::new();
    db.fixture("shop", 200);
    let (key, public) = s.age_key("key.txt");
    let art = s.path(&format!("shop.{}.zst.age", D::ENGINE.payload));
    snap_to_file_for(db.url("shop"), &art, &public).succeeds();
    Cmd::sh(&format!(
        "age -d -i '{}' '{}' | zstd -d | {}",
        key.display(),
        art.display(),
        db.plain_restore("plain")
    ))
    .succeeds();
    assert_eq!(db.contents("plain"), db.contents("shop"));
}

/// A restore over a database that holds data is refused (exit 4, nothing
/// changed, no safety backup, no audit entry) until it is confirmed
/// (`--clean` too on server engines); then the target is replaced whole,
/// after a safety backup encrypted like the backup, and the restore is
/// audited; the safety backup brings the old contents back.
pub fn restore_over_a_non_empty_target_is_refused_then_replaced_with_a_safety_backup_and_audit<
    D: TestDb,
>(
    db: &D,
) {
    let s = Scene::new();
    db.fixture("shop", 200);
    db.fixture("prod", 50);
    db.alter("prod");
    let old_counts = db.counts("prod");
    let before = db.contents("prod");
    let (key, public) = s.age_key("key.txt");
    let store = s.path("store");
    snap_to_store_for(db.url("shop"), &store, &public).succeeds();
    let restore = || {
        Cmd::tool("dbrestore")
            .arg("--store")
            .arg(&store)
            .args(["--latest", "--database", "shop", "-i"])
            .arg(&key)
            .arg("--target")
            .arg(db.url("prod"))
    };

    let replace: &[&str] = if D::ENGINE.server {
        restore().fails_with(4, "not empty").stderr_has("--clean");
        // --clean, but no --yes and no terminal to ask on.
        restore().arg("--clean").fails_with(4, "--yes");
        &["--clean", "--yes"]
    } else {
        restore().fails_with(4, "--yes");
        &["--yes"]
    };
    assert_eq!(
        db.contents("prod"),
        before,
        "a refused restore changed the target"
    );
    assert_eq!(
        artifacts(&store).len(),
        1,
        "a refused restore took a safety backup"
    );
    assert!(
        audit_entries(&store).is_empty(),
        "a refusal was audited as a restore"
    );

    restore()
        .args(replace)
        .succeeds()
        .stderr_has("safety backup");
    assert_eq!(db.contents("prod"), db.contents("shop"));
    db.check_replaced("prod");

    let safety = store_artifact(&store, "default-safety_prod_full_");
    assert!(
        safety.to_string_lossy().ends_with(".age"),
        "the safety backup is not encrypted like the backup: {}",
        safety.display()
    );
    let safety_meta = meta_of(&safety);
    assert_eq!(
        meta_counts(&safety_meta),
        old_counts,
        "the safety backup holds the old contents"
    );
    assert_eq!(safety_meta["source"], db.url("prod"));

    let audit = audit_entries(&store);
    assert_eq!(audit.len(), 1, "{audit:?}");
    let entry = &audit[0];
    assert_eq!(entry["action"], "restore");
    assert_eq!(entry["result"], "success");
    assert_eq!(entry["target"], db.url("prod"));
    assert!(
        entry["details"]["safety_backup"]
            .as_str()
            .is_some_and(|b| b.contains("default-safety_prod_full_")),
        "{entry}"
    );

    Cmd::tool("dbrestore")
        .arg(&safety)
        .arg("-i")
        .arg(&key)
        .arg("--target")
        .arg(db.url("prod"))
        .args(replace)
        .arg("--no-safety-backup")
        .succeeds();
    assert_eq!(db.contents("prod"), before);
}

/// A snapshot taken while a writer commits row after row records the row
/// counts of one consistent moment: no fewer than were committed when it
/// started, no more than when it ended (and the writer did commit in
/// between), and the restore has exactly those.
/// Returns the metadata for engine-specific checks.
pub fn snapshot_under_concurrent_writes_records_the_counts_it_restores<D: ConcurrentWrites>(
    db: &D,
) -> Value {
    let s = Scene::new();
    db.fixture("shop", D::BUSY_ROWS);
    let table = D::WRITER_TABLE;
    let written = || rows_in(&db.counts("shop"), table);
    let mut writer = db.start_writer("shop");
    wait_until("the writer to start", Duration::from_secs(60), || {
        written() > 20
    });

    // Snapshots until one overlaps a commit: on a busy machine the writer
    // may get no turn during a short snapshot.
    let (art, before, after) = (1..=20)
        .map(|attempt| {
            let art = s.path(&format!("shop{attempt}.{}.zst", D::ENGINE.payload));
            let before = written();
            let snap = snap_to_file(db.url("shop"), &art).run();
            let after = written();
            assert!(
                snap.out.status.success(),
                "dbsnap failed:\n{}",
                snap.stderr()
            );
            (art, before, after)
        })
        .find(|(_, before, after)| after > before)
        .expect("in 20 snapshots, the writer never committed while dbsnap ran");
    db.stop_writer("shop");
    assert!(
        writer.wait().expect("writer").success(),
        "the writer failed"
    );
    let last = written();

    let meta = meta_of(&art);
    let recorded = rows_of(&meta, table);
    assert!(
        (before..=after).contains(&recorded),
        "{table}: {recorded} rows recorded, {before} before the snapshot and {after} after"
    );
    assert!(recorded < last, "the writer went on after the snapshot");

    let mut restore = restore_file(&art, db.url("copy"));
    if D::ENGINE.server {
        restore = restore.arg("--create");
    }
    restore.succeeds();
    assert_eq!(db.counts("copy"), meta_counts(&meta));
    meta
}

fn rows_in(counts: &[(String, u64)], table: &str) -> u64 {
    counts
        .iter()
        .find(|(t, _)| t == table)
        .unwrap_or_else(|| panic!("no table {table} in {counts:?}"))
        .1
}

/// A password given in the URL reaches neither the argv of any process
/// (sampled from /proc while dbsnap runs), nor the metadata, nor the audit
/// log, nor any message, even a wrong one; every client tool that
/// connects gets it from the environment.
pub fn a_password_in_the_url_reaches_no_argv_metadata_audit_log_or_message<D: Passwords>(db: &D) {
    let s = Scene::new();
    db.fixture("shop", 20_000);
    let password = db.password().to_string();
    let encoded = crate::pg::encode(&password);
    let secrets = [
        password.clone(),
        encoded.clone(),
        password[..11].to_string(),
    ];
    let without_password = |url: String| url.replace(&format!(":{encoded}@"), "@");

    // Shims that record each client tool's argv (and whether the password
    // variable was set) and run the real one.
    let shims = s.path("shims");
    std::fs::create_dir(&shims).expect("shims");
    let argv_log = s.path("argv.log");
    for tool in D::CLIENT_TOOLS {
        let real = require(tool, "the database's client tools");
        executable(
            &shims.join(tool),
            &format!(
                "#!/bin/sh\nline=\"{tool} password=${{{env}:+set}} argv: $*\"\nprintf '%s\\n' \"$line\" >> '{}'\nexec '{}' \"$@\"\n",
                argv_log.display(),
                real.display(),
                env = D::PASSWORD_ENV,
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
    let snap_err = s.path("dbsnap.stderr");
    let mut child = Cmd::tool("dbsnap")
        .env("PATH", &path)
        .arg(db.password_url("shop"))
        .arg("--to")
        .arg(&store)
        .arg("--no-encrypt")
        .stderr_file(&snap_err)
        .spawn();
    let own_argv = format!(
        "{}\0{}\0--to\0{}\0--no-encrypt\0",
        bin("dbsnap").display(),
        db.password_url("shop"),
        store.display()
    );
    let mut exposed = Vec::new();
    let mut samples = 0;
    let dumping = db.dumping("shop");
    let mut seen_client = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        samples += 1;
        seen_client |= !crate::argv_containing(&dumping, own_argv.as_bytes()).is_empty();
        // dbsnap's own argv holds the URL its caller gave it (and so does a
        // child between fork and exec); the client tools' argv must not.
        for secret in &secrets {
            for argv in crate::argv_containing(secret, own_argv.as_bytes()) {
                if !exposed.contains(&argv) {
                    exposed.push(argv);
                }
            }
        }
    };
    let snap_stderr = std::fs::read_to_string(&snap_err).expect("dbsnap stderr");
    assert!(status.success(), "dbsnap failed:\n{snap_stderr}");
    assert!(
        seen_client,
        "no sample of /proc in {samples} caught a client tool dumping ({dumping})"
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
        .arg(db.password_url(""))
        .succeeds();
    let restore = Cmd::tool("dbrestore")
        .env("PATH", &path)
        .arg("--store")
        .arg(&store)
        .arg("--latest")
        .arg("--target")
        .arg(db.password_url("copy"))
        .arg("--create")
        .succeeds();
    assert_eq!(db.contents("copy"), db.contents("shop"));
    let wrong_url = db
        .password_url("shop")
        .replace(&encoded, &format!("Wrong-{}", &password[3..11]));
    let wrong = snap_to_file(
        wrong_url,
        s.path(&format!("wrong.{}.zst", D::ENGINE.payload)),
    )
    .fails_with(1, D::WRONG_PASSWORD);
    assert!(
        !wrong.stderr().contains("Wrong-"),
        "the wrong password is in the message:\n{}",
        wrong.stderr()
    );

    let argv = std::fs::read_to_string(&argv_log).expect("argv log");
    for tool in D::CLIENT_TOOLS {
        assert!(
            argv.lines().any(|l| l.starts_with(&format!("{tool} "))),
            "{tool} never ran through the shim:\n{argv}"
        );
    }
    assert!(
        argv.lines()
            .filter(|l| db.connects(l))
            .all(|l| l.contains("password=set")),
        "a client connected without {}:\n{argv}",
        D::PASSWORD_ENV
    );

    let art = store_artifact(&store, "default_shop_full_");
    let meta = std::fs::read_to_string(format!("{}.meta.json", art.display())).expect("meta");
    let audit = std::fs::read_to_string(store.join("audit.log")).expect("audit log");
    assert_eq!(
        serde_json::from_str::<Value>(&meta).expect("json")["source"],
        without_password(db.password_url("shop")).as_str()
    );
    let copy = without_password(db.password_url("copy"));
    assert!(audit.contains(&copy), "no audit entry for {copy}:\n{audit}");
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

/// On a server, a restore into a database that does not exist is refused
/// as not found (exit 3, naming `--create`) and creates nothing; with
/// `--create` it creates and fills it.
pub fn a_restore_into_a_missing_database_needs_create<D: TestDb>(db: &D) {
    assert!(D::ENGINE.server, "file-backed targets need no --create");
    let (_s, art) = plain_snapshot_of_shop(db, 10);
    restore_file(&art, db.url("fresh")).fails_with(3, "--create");
    assert!(!db.databases().contains(&"fresh".to_string()));
    restore_file(&art, db.url("fresh"))
        .arg("--create")
        .succeeds();
    assert_eq!(db.contents("fresh"), db.contents("shop"));
}
