//! Base backups, WAL archiving with walship and point-in-time recovery, against real clusters.

use dbsafe_tests::pg::{self, Cluster, Restored};
use dbsafe_tests::testdb::TestDb;
use dbsafe_tests::{files_under, next_second, prune_store, wait_until, wal_status, Cmd, Scene};
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Drill {
    s: Scene,
    store: PathBuf,
    key: Option<PathBuf>,
    public: Option<String>,
    c: Cluster,
}

impl Drill {
    fn new(encrypted: bool) -> Drill {
        Drill::with_cluster(encrypted, Cluster::start())
    }

    fn with_cluster(encrypted: bool, c: Cluster) -> Drill {
        let s = Scene::new();
        let store = s.mkdir("store");
        let (key, public, recipients) = if encrypted {
            let (k, p) = s.age_key("key.txt");
            let r = s.write("recipients.txt", &format!("{p}\n"));
            (Some(k), Some(p), Some(r))
        } else {
            (None, None, None)
        };
        pg::share_with_server(s.dir.path());
        c.archive_to(&store, recipients.as_deref());
        c.psql(
            "postgres",
            "CREATE TABLE ledger(id serial PRIMARY KEY, batch int NOT NULL, note text);",
        );
        Drill {
            s,
            store,
            key,
            public,
            c,
        }
    }

    /// A drill with batch 1 (`first` rows) in a base backup and batch 2
    /// (`second` rows) committed after it.
    fn after_base_backup(encrypted: bool, first: u32, second: u32) -> Drill {
        let d = Drill::new(encrypted);
        d.insert(1, first);
        d.base_backup();
        d.insert(2, second);
        d
    }

    /// A drill with batch 1 (`rows` rows) whose base backup is taken while
    /// pgbench writes (for `seconds`): whatever the target, pgbench's
    /// invariant holds in the recovered database. Returns pgbench, running.
    fn backed_up_under_pgbench(rows: u32, seconds: &str) -> (Drill, std::process::Child) {
        let d = Drill::new(false);
        d.insert(1, rows);
        let bench = d.pgbench_for(seconds);
        d.base_backup();
        (d, bench)
    }

    /// pgbench initialised, then writing for `seconds` in the background.
    fn pgbench_for(&self, seconds: &str) -> std::process::Child {
        self.c
            .pgbench("postgres")
            .args(["-i", "-q", "-s", "1"])
            .succeeds();
        self.c
            .pgbench("postgres")
            .args(["-n", "-c", "2", "-T", seconds])
            .spawn()
    }

    fn insert(&self, batch: u32, n: u32) {
        self.c.psql("postgres", &format!("INSERT INTO ledger(batch, note) SELECT {batch}, 'row ' || i FROM generate_series(1, {n}) i;"));
    }

    fn base_backup(&self) {
        let mut cmd = Cmd::tool("dbsnap")
            .arg("--base")
            .arg(self.c.url("postgres"))
            .arg("--to")
            .arg(&self.store);
        cmd = match &self.public {
            Some(p) => cmd.args(["-r", p]),
            None => cmd.arg("--no-encrypt"),
        };
        cmd.succeeds();
        pg::share_with_server(&self.store);
    }

    fn restore(&self, time: &str, dir: &str) -> (Restored, dbsafe_tests::Run) {
        self.restore_with(&["--target-time", time], dir)
    }

    /// dbrestore --pgdata DATA with these target flags (and the drill's key).
    fn pgdata_restore(&self, target: &[&str], data: &Path) -> Cmd {
        let cmd = Cmd::tool("dbrestore")
            .arg("--store")
            .arg(&self.store)
            .args(target)
            .arg("--pgdata")
            .arg(data);
        match &self.key {
            Some(k) => cmd.arg("-i").arg(k),
            None => cmd,
        }
    }

    /// dbrestore --pgdata DIR --start with these target flags.
    fn recovery(&self, target: &[&str], dir: &str) -> (Cmd, Restored) {
        let data = self.s.path(dir);
        let port = dbsafe_tests::free_port();
        let cmd = self
            .pgdata_restore(target, &data)
            .args(["--start", "--json"])
            .args(["--port", &port.to_string()]);
        (cmd, Restored { data, port })
    }

    fn restore_with(&self, target: &[&str], dir: &str) -> (Restored, dbsafe_tests::Run) {
        let (cmd, restored) = self.recovery(target, dir);
        let r = cmd.succeeds();
        (restored, r)
    }

    fn now(&self) -> String {
        self.c.scalar("postgres", NOW_SQL)
    }
}

/// A recovery target time: the server's clock in UTC, to the microsecond.
const NOW_SQL: &str =
    "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US');";

/// A recovery target time in a second of its own, read from `clock`:
/// targets are compared by the second, so nothing committed before or after
/// it may share its second.
fn target_time(clock: impl FnOnce() -> String) -> String {
    next_second();
    let t = clock();
    next_second();
    t
}

/// Whether pgbench's balances add up to its history, and it wrote any.
fn pgbench_balanced(r: &Restored) -> String {
    r.psql(
        "postgres",
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT sum(delta) FROM pgbench_history) \
         AND (SELECT count(*) FROM pgbench_history) > 0;",
    )
}

/// Waits for pgbench to end; fails unless it exited 0.
fn ran_clean(mut bench: std::process::Child) {
    assert!(
        bench.wait().expect("pgbench").success(),
        "pgbench ran clean"
    );
}

fn batches(r: &Restored) -> String {
    r.psql("postgres", "SELECT string_agg(batch || ':' || n, ',' ORDER BY batch) FROM (SELECT batch, count(*) n FROM ledger GROUP BY batch) b;")
}

fn drill(encrypted: bool) {
    let d = Drill::after_base_backup(encrypted, 1000, 500);
    // Recovery targets are compared by the second: the target stands in a
    // second of its own, after the inserts and before the bad transaction.
    let t = target_time(|| d.now());
    d.c.psql("postgres", "DELETE FROM ledger WHERE id % 10 <> 0;"); // the bad transaction
    d.c.switch_and_wait_archived();
    let clock = std::time::Instant::now();
    // The new primary archives its timeline: --archive.
    let (restored, run) = d.restore_with(&["--target-time", &t, "--archive"], "restored");
    eprintln!(
        "PITR drill restore (encrypted={encrypted}) took {:.1}s",
        clock.elapsed().as_secs_f64()
    );
    assert_eq!(
        batches(&restored),
        "1:1000,2:500",
        "exactly batches 1 and 2"
    );
    let report = run.json();
    assert!(
        report["reached"].as_str().is_some(),
        "the reached time is reported: {report}"
    );
    assert_eq!(
        restored.psql("postgres", "SELECT pg_is_in_recovery();"),
        "f",
        "promoted"
    );

    // A second drill on the restored server: it runs on a new timeline and archives it.
    restored.psql(
        "postgres",
        "INSERT INTO ledger(batch, note) SELECT 3, 'row ' || i FROM generate_series(1, 200) i;",
    );
    let t2 = target_time(|| restored.psql("postgres", NOW_SQL));
    restored.psql("postgres", "DELETE FROM ledger;");
    let seg = restored.switch_and_wait_archived();
    assert!(
        seg.starts_with("00000002"),
        "the restored server is on timeline 2: {seg}"
    );
    let wal: Vec<String> = std::fs::read_dir(d.store.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        wal.iter().any(|f| f.starts_with("00000002.history")),
        "{wal:?}"
    );
    let (again, _) = d.restore(&t2, "restored2");
    assert_eq!(
        batches(&again),
        "1:1000,2:500,3:200",
        "recovery followed timeline 2"
    );
}

#[test]
fn lsn_and_xid_targets_land_exactly_and_pause_or_shutdown_stop_where_asked() {
    let (d, bench) = Drill::backed_up_under_pgbench(100, "4");
    ran_clean(bench);
    d.insert(2, 50);
    // After batch 2's commit record: an LSN target there keeps batch 2.
    let lsn =
        d.c.scalar("postgres", "SELECT pg_current_wal_insert_lsn()::text;");
    // Batch 3 in one transaction whose id is the xid target.
    let xid = d.c.scalar(
        "postgres",
        "WITH i AS (INSERT INTO ledger(batch, note) SELECT 3, 'row ' || g FROM generate_series(1, 30) g RETURNING 1) \
         SELECT pg_current_xact_id()::text FROM i LIMIT 1;",
    );
    d.insert(4, 7);
    d.c.switch_and_wait_archived();

    let (at_lsn, _) = d.restore_with(&["--target-lsn", &lsn], "lsn");
    assert_eq!(batches(&at_lsn), "1:100,2:50", "up to the LSN");
    assert_eq!(pgbench_balanced(&at_lsn), "t", "pgbench's balances add up");
    drop(at_lsn);
    let (at_xid, _) = d.restore_with(&["--target-xid", &xid], "xid");
    assert_eq!(
        batches(&at_xid),
        "1:100,2:50,3:30",
        "the xid's transaction included"
    );
    drop(at_xid);
    let (before_xid, _) = d.restore_with(&["--target-xid", &xid, "--target-exclusive"], "xid-excl");
    assert_eq!(
        batches(&before_xid),
        "1:100,2:50",
        "--target-exclusive stops just before it"
    );
    drop(before_xid);

    // pause: the server stays in recovery, read-only, paused at the target.
    let (paused, _) = d.restore_with(
        &["--target-xid", &xid, "--target-action", "pause"],
        "paused",
    );
    assert_eq!(paused.psql("postgres", "SELECT pg_is_in_recovery();"), "t");
    assert_eq!(
        paused.psql("postgres", "SELECT pg_get_wal_replay_pause_state();"),
        "paused"
    );
    assert_eq!(batches(&paused), "1:100,2:50,3:30");
    drop(paused);

    // shutdown: dbrestore returns once the server has stopped at the target.
    let (stopped, _) = d.restore_with(
        &["--target-lsn", &lsn, "--target-action", "shutdown"],
        "stopped",
    );
    assert!(
        !stopped.data.join("postmaster.pid").exists(),
        "the server is stopped"
    );
    let control = Cmd::new(pg::server_bin("pg_controldata"))
        .arg(&stopped.data)
        .succeeds()
        .stdout();
    assert!(
        control.contains("shut down in recovery"),
        "stopped in recovery, at the target: {control}"
    );
}

#[test]
fn pitr_drill_restores_exactly_up_to_the_target_time_and_across_timelines() {
    drill(false);
}

#[test]
fn pitr_drill_with_encrypted_base_backup_and_wal() {
    drill(true);
}

#[test]
fn base_backups_verify_at_every_level_and_refusals() {
    let d = Drill::new(true);
    d.insert(1, 300);
    d.base_backup();
    let key = d.key.clone().unwrap();
    let meta: serde_json::Value = {
        let f = std::fs::read_dir(d.store.join("backups"))
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".meta.json"))
            .unwrap();
        serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap()
    };
    assert_eq!(meta["backup_type"], "base");
    assert_eq!(meta["payload"], "tar");
    for k in ["timeline", "start_lsn", "stop_lsn", "start_wal", "stop_wal"] {
        assert!(!meta["wal"][k].is_null(), "wal.{k} missing: {meta}");
    }
    for level in ["quick", "full", "restore"] {
        let r = Cmd::tool("dbverify")
            .arg("--store")
            .arg(&d.store)
            .args(["--latest", "--level", level, "--json"])
            .arg("-i")
            .arg(&key)
            .succeeds();
        assert_eq!(r.json()[0]["result"], "pass", "{level}");
        if level == "restore" {
            assert_eq!(r.json()[0]["integrity_score"], 1.0);
        }
    }
    // A time before the oldest base backup: exit 3, naming the range there is.
    d.pgdata_restore(
        &["--target-time", "2001-01-01 00:00:00"],
        &d.s.path("early"),
    )
    .fails_with_code(3)
    .stderr_has("can recover from");
    // A data directory that is not empty: exit 4, untouched.
    std::fs::create_dir_all(d.s.path("busy")).unwrap();
    std::fs::write(d.s.path("busy/precious"), "x").unwrap();
    d.pgdata_restore(&["--target-time", "latest"], &d.s.path("busy"))
        .fails_with(4, "busy is not empty");
    assert_eq!(std::fs::read_dir(d.s.path("busy")).unwrap().count(), 1);
    // Without archiving, a base backup is refused: it could never be restored.
    let plain = Cluster::start();
    Cmd::tool("dbsnap")
        .arg("--no-encrypt")
        .arg("--base")
        .arg(plain.url("postgres"))
        .arg("--to")
        .arg(d.s.path("other"))
        .fails_with_code(2)
        .stderr_has("archive_mode");
}

#[test]
fn prune_keeps_the_wal_a_kept_base_backup_needs_and_pitr_still_works() {
    let d = Drill::after_base_backup(false, 100, 100);
    d.c.switch_and_wait_archived();
    // Base backups are named to the second.
    next_second();
    d.base_backup();
    d.insert(3, 100);
    d.c.switch_and_wait_archived();
    let wal_files = |store: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(store.join("wal"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.contains(".sha256") && !n.contains(".meta.json"))
            .collect();
        v.sort();
        v
    };
    let metas: Vec<serde_json::Value> = {
        let mut v: Vec<_> = std::fs::read_dir(d.store.join("backups"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".meta.json"))
            .map(|e| {
                serde_json::from_slice::<serde_json::Value>(&std::fs::read(e.path()).unwrap())
                    .unwrap()
            })
            .collect();
        v.sort_by_key(|m| m["timestamp"].as_str().unwrap().to_string());
        v
    };
    let first_start = metas[0]["wal"]["start_wal"].as_str().unwrap().to_string();
    let second_start = metas[1]["wal"]["start_wal"].as_str().unwrap().to_string();
    assert!(first_start < second_start);
    let needed = |files: &[String], from: &str| -> Vec<String> {
        files.iter().filter(|f| &f[..24] >= from).cloned().collect()
    };
    let before = wal_files(&d.store);
    prune_store(&d.store)
        .args(["--keep-last", "5", "--wal"])
        .succeeds();
    assert_eq!(
        wal_files(&d.store),
        needed(&before, &first_start),
        "both base backups kept: everything from the oldest one's start stays"
    );
    prune_store(&d.store)
        .args(["--keep-last", "1", "--wal"])
        .succeeds();
    let after = wal_files(&d.store);
    assert_eq!(
        after,
        needed(&before, &second_start),
        "WAL only the pruned base backup needed is gone"
    );
    assert!(after.len() < before.len());
    pg::share_with_server(&d.store);
    let (restored, _) = d.restore("latest", "restored");
    assert_eq!(batches(&restored), "1:100,2:100,3:100");
}

#[test]
fn pitr_drill_with_base_backups_and_wal_on_s3() {
    use dbsafe_tests::s3::S3Server;
    let s = Scene::new();
    let server = S3Server::start(&s);
    pg::share_with_server(s.dir.path());
    let store = server.url("pitr");
    let c = Cluster::start();
    // The server's archive_command reaches the S3 service with the environment
    // an operator would give the postgres service (here: written into the command).
    let env: String = server
        .env_via(&server.endpoint())
        .into_iter()
        .map(|(k, v)| format!("{k}='{v}' "))
        .collect();
    let command = format!(
        "{env}DBSAFE_CONFIG=/dev/null {} push %p %f --to {store} --no-encrypt",
        dbsafe_tests::bin("walship").display()
    );
    c.psql(
        "postgres",
        &format!(
            "ALTER SYSTEM SET wal_level = 'replica'; ALTER SYSTEM SET archive_mode = 'on'; ALTER SYSTEM SET archive_command = '{}';",
            command.replace('\'', "''")
        ),
    );
    c.restart();
    c.psql(
        "postgres",
        "CREATE TABLE ledger(id serial PRIMARY KEY, batch int NOT NULL, note text);",
    );
    c.psql(
        "postgres",
        "INSERT INTO ledger(batch, note) SELECT 1, 'row ' || i FROM generate_series(1, 400) i;",
    );
    server
        .tool("dbsnap")
        .arg("--no-encrypt")
        .arg("--base")
        .arg(c.url("postgres"))
        .arg("--to")
        .arg(&store)
        .succeeds();
    c.psql(
        "postgres",
        "INSERT INTO ledger(batch, note) SELECT 2, 'row ' || i FROM generate_series(1, 100) i;",
    );
    let t = target_time(|| c.scalar("postgres", NOW_SQL));
    c.psql("postgres", "DELETE FROM ledger;");
    c.switch_and_wait_archived();
    let keys = server.keys("pitr/wal");
    assert!(
        keys.iter().any(|k| k.ends_with(".zst")),
        "WAL is on S3: {keys:?}"
    );
    let data = s.path("restored");
    let port = dbsafe_tests::free_port();
    server
        .tool("dbrestore")
        .arg("--store")
        .arg(&store)
        .args(["--target-time", &t, "--start"])
        .arg("--pgdata")
        .arg(&data)
        .args(["--port", &port.to_string()])
        .succeeds();
    let restored = Restored { data, port };
    assert_eq!(batches(&restored), "1:400,2:100");
    server
        .tool("dbverify")
        .arg("--store")
        .arg(&store)
        .args(["--latest", "--level", "restore"])
        .succeeds();
}

fn timelines_in(store: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(store.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.contains(".history") && !f.ends_with(".sha256") && !f.ends_with(".meta.json"))
        .collect();
    v.sort();
    v
}

/// The incident as it goes: the old primary writes on after the accident,
/// a recovery to T1 becomes the new primary on timeline 2, and then
/// recoveries again and again: to TB on timeline 1 after the branch point
/// (exact: never the branch point, as following "latest" would land), to T2
/// on timeline 2, to a time both branches hold (refused, listing them, or
/// exact with --target-timeline), drills that add no timeline, and the
/// first recoveries once more.
#[test]
fn repeated_recoveries_land_exactly_where_asked_on_the_timeline_asked() {
    // pgbench writes through the base backup, phase A, T1 and the accident.
    let (d, bench) = Drill::backed_up_under_pgbench(100, "8");
    d.insert(2, 100);
    let t1 = target_time(|| d.now());
    d.c.psql("postgres", "DELETE FROM ledger;"); // the accident
    d.insert(4, 40); // the old primary writes on
    let tb = target_time(|| d.now());
    d.insert(5, 50);
    ran_clean(bench);
    d.c.switch_and_wait_archived();
    next_second();
    let (primary, _) = d.restore_with(&["--target-time", &t1, "--archive"], "new-primary");
    assert_eq!(batches(&primary), "1:100,2:100");
    assert_eq!(
        pgbench_balanced(&primary),
        "t",
        "pgbench's balances add up at T1"
    );
    primary.psql(
        "postgres",
        "INSERT INTO ledger(batch, note) SELECT 3, 'x' FROM generate_series(1, 30);",
    );
    let t2 = target_time(|| primary.psql("postgres", NOW_SQL));
    primary.psql(
        "postgres",
        "INSERT INTO ledger(batch, note) SELECT 6, 'x' FROM generate_series(1, 60);",
    );
    primary.switch_and_wait_archived();
    let history = timelines_in(&d.store);
    assert_eq!(history.len(), 1, "{history:?}");

    // TB on timeline 1 after the branch point: exactly TB, not the branch point.
    let (at_tb, _) = d.restore(&tb, "tb");
    assert_eq!(
        batches(&at_tb),
        "4:40",
        "timeline 1 at TB: after the accident, batch 4"
    );
    drop(at_tb);
    // T2 on timeline 2.
    let (at_t2, _) = d.restore(&t2, "t2");
    assert_eq!(batches(&at_t2), "1:100,2:100,3:30");
    drop(at_t2);

    // Both branches write on: a time they both hold is refused, naming them.
    d.insert(7, 70);
    primary.psql(
        "postgres",
        "INSERT INTO ledger(batch, note) SELECT 8, 'x' FROM generate_series(1, 80);",
    );
    let tc = target_time(|| d.now());
    d.insert(9, 90);
    d.c.switch_and_wait_archived();
    primary.psql(
        "postgres",
        "INSERT INTO ledger(batch, note) SELECT 10, 'x' FROM generate_series(1, 10);",
    );
    primary.switch_and_wait_archived();
    let (cmd, _) = d.recovery(&["--target-time", &tc], "ambiguous");
    cmd.fails_with_code(2)
        .stderr_has("lies on 2 timelines")
        .stderr_has("timeline 2, branched from 1");
    assert!(
        !d.s.path("ambiguous").join("PG_VERSION").exists(),
        "nothing was restored"
    );
    // Nor does "latest" choose: timeline 1 wrote on after timeline 2 began.
    for _ in 0..2 {
        let (cmd, _) = d.recovery(&["--target-time", "latest"], "ambiguous-latest");
        cmd.fails_with_code(2).stderr_has("lies on 2 timelines");
    }
    let (one, _) = d.restore_with(&["--target-time", &tc, "--target-timeline", "1"], "tc1");
    assert_eq!(batches(&one), "4:40,5:50,7:70");
    drop(one);
    let (two, _) = d.restore_with(&["--target-time", &tc, "--target-timeline", "2"], "tc2");
    assert_eq!(batches(&two), "1:100,2:100,3:30,6:60,8:80");
    drop(two);

    // Drills archive nothing: three in a row leave the archive's timelines as they were.
    for k in 0..3 {
        let (drill, _) = d.restore(&t1, &format!("drill{k}"));
        assert_eq!(batches(&drill), "1:100,2:100", "drill {k}");
        drill.psql(
            "postgres",
            "INSERT INTO ledger(batch, note) VALUES (99, 'drill');",
        );
        drill.psql("postgres", "SELECT pg_switch_wal();");
    }
    assert_eq!(timelines_in(&d.store), history, "no drill added a timeline");
    // And the first recoveries again, still exact.
    let (again, _) = d.restore(&tb, "tb-again");
    assert_eq!(batches(&again), "4:40");
    let (again2, _) = d.restore_with(
        &["--target-time", &t2, "--target-timeline", "2"],
        "t2-again",
    );
    assert_eq!(batches(&again2), "1:100,2:100,3:30");
}

/// A named restore point, recorded in the store, is where recovery stops;
/// the recovered server keeps no recovery setting for its own base backups.
#[test]
fn a_restore_point_is_reached_exactly_and_a_recovered_server_backs_up_clean() {
    let d = Drill::after_base_backup(false, 10, 20);
    Cmd::tool("walship")
        .args(["restore-point", "before-release"])
        .arg(d.c.url("postgres"))
        .arg("--to")
        .arg(&d.store)
        .succeeds();
    d.insert(3, 30);
    // A base backup taken after the restore point cannot reach it: the
    // recovery starts from the one before it.
    next_second();
    d.base_backup();
    d.c.switch_and_wait_archived();
    let (rp, _) = d.restore_with(&["--target-name", "before-release", "--archive"], "rp");
    assert_eq!(batches(&rp), "1:10,2:20");
    let auto = std::fs::read_to_string(rp.data.join("postgresql.auto.conf")).unwrap();
    assert!(
        !auto.contains("recovery_target"),
        "recovery settings outlived recovery:\n{auto}"
    );
    assert!(!auto.contains("restore_command"), "{auto}");
    // A base backup of the recovered server, restored to the end, holds every
    // commit: no inherited target stops it early.
    rp.psql(
        "postgres",
        "INSERT INTO ledger(batch, note) SELECT 6, 'x' FROM generate_series(1, 60);",
    );
    next_second();
    Cmd::tool("dbsnap")
        .arg("--no-encrypt")
        .arg("--base")
        .arg(format!(
            "postgres://postgres@{}:{}/postgres",
            pg::encode(&rp.data.to_string_lossy()),
            rp.port
        ))
        .arg("--to")
        .arg(&d.store)
        .succeeds();
    pg::share_with_server(&d.store);
    rp.psql(
        "postgres",
        "INSERT INTO ledger(batch, note) SELECT 7, 'x' FROM generate_series(1, 70);",
    );
    rp.switch_and_wait_archived();
    let (latest, _) = d.restore_with(&["--target-time", "latest"], "latest");
    assert_eq!(batches(&latest), "1:10,2:20,6:60,7:70");
    // The base backup on timeline 2 restores at --level restore even once
    // timeline 2's history file is gone from the archive (PostgreSQL does
    // not need one to be archived): "not archived" is no failure there.
    for f in files_under(&d.store)
        .iter()
        .filter(|f| f.starts_with("wal/00000002.history"))
    {
        std::fs::remove_file(d.store.join(f)).unwrap();
    }
    for _ in 0..2 {
        let r = Cmd::tool("dbverify")
            .arg("--store")
            .arg(&d.store)
            .args(["--latest", "--level", "restore", "--json"])
            .succeeds();
        let records = r.json();
        assert!(
            records
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["file"].as_str().is_some_and(|f| f.contains("_base_"))
                    && v["result"] == "pass"),
            "{records}"
        );
    }
}

/// The restored server runs as postgres (dbrestore runs as root here): a
/// key only root can read would stop recovery at its first WAL file, so
/// the recovery is refused before anything is unpacked.
#[test]
fn a_key_the_server_cannot_read_is_refused_before_anything_is_restored() {
    assert!(
        dbsafe_tests::running_as_root(),
        "this test runs as root, so that the restored server runs as another user"
    );
    let d = Drill::after_base_backup(true, 10, 20);
    let private = d.s.mkdir("root-only");
    Cmd::new("chown").arg("root:").arg(&private).succeeds();
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let key = private.join("key.txt");
    std::fs::copy(d.key.as_ref().unwrap(), &key).unwrap();
    let data = d.s.path("refused");
    for _ in 0..2 {
        Cmd::tool("dbrestore")
            .arg("--store")
            .arg(&d.store)
            .args(["--target-time", "latest", "--start", "--pgdata"])
            .arg(&data)
            .arg("-i")
            .arg(&key)
            .fails_with(2, "its restore_command could not read")
            .stderr_has("key.txt");
        assert!(!data.exists(), "nothing was unpacked");
    }
}

/// Recovery settings go when recovery ends, however the server was started:
/// by hand after `dbrestore --pgdata` without `--start`, or paused at the
/// target and resumed by hand.
#[test]
fn no_recovery_setting_outlives_a_promotion_by_hand() {
    let d = Drill::after_base_backup(false, 10, 20);
    let t = target_time(|| d.now());
    d.insert(3, 30);
    d.c.switch_and_wait_archived();
    let promoted = |r: &Restored| {
        wait_until("the promotion", Duration::from_secs(120), || {
            r.psql("postgres", "SELECT pg_is_in_recovery();") == "f"
        });
        assert_eq!(batches(r), "1:10,2:20");
        let auto = std::fs::read_to_string(r.data.join("postgresql.auto.conf")).unwrap();
        for setting in ["restore_command", "recovery_target", "recovery_end_command"] {
            assert!(
                !auto.contains(setting),
                "{setting} outlived recovery:\n{auto}"
            );
        }
    };
    for round in 0..2 {
        let by_hand = Restored {
            data: d.s.path(&format!("by-hand-{round}")),
            port: dbsafe_tests::free_port(),
        };
        d.pgdata_restore(
            &["--target-time", &t, "--port", &by_hand.port.to_string()],
            &by_hand.data,
        )
        .succeeds();
        by_hand.start_by_hand();
        promoted(&by_hand);
        let (paused, _) = d.restore_with(
            &["--target-time", &t, "--target-action", "pause"],
            &format!("paused-{round}"),
        );
        paused.psql("postgres", "SELECT pg_wal_replay_resume();");
        promoted(&paused);
    }
}

/// Clusters made with `initdb --wal-segsize 64` have 64 segments a log:
/// the archive shows no false gap at a log boundary and recovery is exact.
#[test]
fn a_cluster_with_64_mib_segments_archives_without_false_gaps_and_recovers_exactly() {
    let d = Drill::with_cluster(false, Cluster::start_with(&["--wal-segsize=64"]));
    d.insert(1, 50);
    d.base_backup();
    // Past a log boundary: 64 segments of 64 MiB make a log.
    for _ in 0..66 {
        d.c.psql(
            "postgres",
            "SELECT pg_switch_wal(); INSERT INTO ledger(batch, note) VALUES (2, 'x');",
        );
    }
    d.c.switch_and_wait_archived();
    let t = target_time(|| d.now());
    d.c.psql("postgres", "DELETE FROM ledger;");
    d.c.switch_and_wait_archived();
    let status = wal_status(&d.store).arg("--json").succeeds().json();
    assert_eq!(status["wal"]["gaps"], serde_json::json!([]), "{status}");
    assert!(
        status["wal"]["newest"]
            .as_str()
            .is_some_and(|n| n[8..16] != *"00000000"),
        "the archive went past a log boundary: {status}"
    );
    let (r, _) = d.restore(&t, "restored");
    assert_eq!(batches(&r), "1:50,2:66");
}

/// The identity in the config file, and nowhere else, decrypts both the
/// base backup and the WAL its recovery fetches.
#[test]
fn an_identity_only_in_the_config_file_decrypts_the_base_backup_and_its_wal() {
    let d = Drill::after_base_backup(true, 10, 20);
    d.c.switch_and_wait_archived();
    let key = d.key.clone().expect("encrypted drill");
    let cfg = d.s.write(
        "dbsafe.toml",
        &format!("[defaults]\nidentity_file = \"{}\"\n", key.display()),
    );
    pg::share_with_server(d.s.dir.path());
    let data = d.s.path("from-config");
    let port = dbsafe_tests::free_port();
    Cmd::tool("dbrestore")
        .arg("--store")
        .arg(&d.store)
        .args(["--target-time", "latest", "--start", "--pgdata"])
        .arg(&data)
        .args(["--port", &port.to_string()])
        .env("DBSAFE_CONFIG", &cfg)
        .env_remove("DBSAFE_IDENTITY_FILE")
        .succeeds();
    let r = Restored { data, port };
    assert_eq!(batches(&r), "1:10,2:20");
}
