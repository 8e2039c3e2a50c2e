//! dbprune and dbverify --status over real stores.

use dbsafe_tests::{
    artifacts, prune_store, snap_to_file, snap_to_store, sqlite, temporaries, wait_until, Cmd,
    LockHolder, Scene,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A store of real artifacts under many timestamps: one dbsnap artifact per
/// database, copied to each name with its own sidecars.
struct Fixture {
    s: Scene,
    store: PathBuf,
}

fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y%m%d_%H%M%S").to_string()
}

impl Fixture {
    fn new() -> Fixture {
        let s = Scene::new();
        let store = s.path("store");
        Fixture { s, store }
    }

    fn template(&self, db: &str) -> (Vec<u8>, serde_json::Value) {
        let path = self.s.path(&format!("{db}.db"));
        if !path.exists() {
            sqlite::sample(&path, 10);
        }
        let out = self.s.path(&format!("{db}.tpl.sqlite.zst"));
        if !out.exists() {
            snap_to_file(sqlite::url(&path), &out).succeeds();
        }
        let meta =
            serde_json::from_slice(&std::fs::read(format!("{}.meta.json", out.display())).unwrap())
                .unwrap();
        (std::fs::read(&out).unwrap(), meta)
    }

    /// Adds an artifact of `env`/`db` taken at `t`; returns its file name.
    fn add(&self, env: &str, db: &str, t: chrono::DateTime<chrono::Utc>, verified: bool) -> String {
        let (bytes, mut meta) = self.template(db);
        let dir = self.store.join("backups");
        std::fs::create_dir_all(&dir).unwrap();
        let name = format!("{env}_{db}_full_{}.sqlite.zst", stamp(t));
        std::fs::write(dir.join(&name), &bytes).unwrap();
        let sum = dbsafe_tests::sha256_file(&dir.join(&name));
        std::fs::write(
            dir.join(format!("{name}.sha256")),
            format!("{sum}  {name}\n"),
        )
        .unwrap();
        meta["file"] = name.clone().into();
        meta["environment"] = env.into();
        meta["timestamp"] = stamp(t).into();
        std::fs::write(
            dir.join(format!("{name}.meta.json")),
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
        if verified {
            let rec = serde_json::json!({"file": name, "verified_at": t.to_rfc3339(), "level": "full", "result": "pass",
                "integrity_score": 1.0, "problems": [], "checks": [], "duration_seconds": 0.1, "tool": {"name": "dbverify", "version": "test"}});
            std::fs::write(
                dir.join(format!("{name}.verify.json")),
                serde_json::to_vec(&rec).unwrap(),
            )
            .unwrap();
        }
        name
    }

    fn files(&self) -> BTreeSet<String> {
        artifacts(&self.store)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    fn prune(&self) -> Cmd {
        prune_store(&self.store)
    }
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn days(n: i64) -> chrono::Duration {
    chrono::Duration::days(n)
}

#[test]
fn dry_run_lists_exactly_what_the_real_run_deletes() {
    let f = Fixture::new();
    let mut t = now() - days(200);
    let mut i = 0;
    while t < now() {
        f.add("production", "app", t, i % 10 == 3);
        if i % 2 == 0 {
            f.add("staging", "crm", t + chrono::Duration::minutes(7), false);
        }
        t += chrono::Duration::hours(13);
        i += 1;
    }
    let before = f.files();
    assert!(before.len() > 300, "{} artifacts", before.len());
    let args = [
        "--keep-daily",
        "7",
        "--keep-weekly",
        "4",
        "--keep-monthly",
        "3",
    ];
    let plan = f
        .prune()
        .args(args)
        .args(["--dry-run", "--json"])
        .succeeds()
        .json();
    assert_eq!(f.files(), before, "a dry run deleted something");
    let planned: BTreeSet<String> = dbsafe_tests::pruned_ids(&plan).into_iter().collect();
    assert!(!planned.is_empty());
    for d in plan["backups"].as_array().unwrap() {
        assert!(
            !d["reasons"].as_array().unwrap().is_empty(),
            "every decision says why: {d}"
        );
    }
    let real = f.prune().args(args).arg("--json").succeeds().json();
    let after = f.files();
    let deleted: BTreeSet<String> = before.difference(&after).cloned().collect();
    assert_eq!(deleted, planned);
    assert_eq!(real["deleted"].as_u64().unwrap() as usize, planned.len());
    // What remains still checks out with coreutils, with no orphan sidecars.
    for e in std::fs::read_dir(f.store.join("backups"))
        .unwrap()
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(a) = n.strip_suffix(".sha256") {
            assert!(after.contains(a), "orphan sidecar {n}");
            Cmd::new("sha256sum")
                .args(["-c", &n])
                .current_dir(f.store.join("backups"))
                .succeeds();
        }
    }
    // One audit entry per deletion.
    let audit = std::fs::read_to_string(f.store.join("audit.log")).unwrap();
    assert_eq!(
        audit
            .lines()
            .filter(|l| l.contains("\"prune-delete\""))
            .count(),
        planned.len()
    );
}

#[test]
fn newest_and_newest_verified_survive_keep_last_zero() {
    let f = Fixture::new();
    let verified = f.add("production", "app", now() - days(30), true);
    f.add("production", "app", now() - days(40), true);
    for d in [20, 10, 1] {
        f.add("production", "app", now() - days(d), false);
    }
    let newest = f.add(
        "production",
        "app",
        now() - chrono::Duration::hours(1),
        false,
    );
    let crm = f.add("staging", "crm", now() - days(100), false);
    f.prune().args(["--keep-last", "0"]).succeeds();
    assert_eq!(f.files(), [verified, newest, crm].into_iter().collect());
}

#[test]
fn a_backup_named_in_a_release_manifest_is_pinned() {
    let f = Fixture::new();
    let pinned = f.add("production", "app", now() - days(50), false);
    f.add("production", "app", now() - days(40), false);
    let newest = f.add("production", "app", now() - days(1), false);
    std::fs::create_dir_all(f.store.join("releases/production")).unwrap();
    std::fs::write(
        f.store.join("releases/production/v1.json"),
        serde_json::to_vec(&serde_json::json!({
        "kind": "release", "pre_release_backup": format!("backups/{pinned}")}))
        .unwrap(),
    )
    .unwrap();
    f.prune().args(["--keep-last", "1"]).succeeds();
    assert_eq!(f.files(), [pinned, newest].into_iter().collect());
}

#[test]
fn without_flags_the_environment_retention_applies() {
    let f = Fixture::new();
    for d in 0..20 {
        f.add(
            "production",
            "app",
            now() - days(d * 5) - chrono::Duration::hours(1),
            false,
        );
        f.add(
            "development",
            "app",
            now() - days(d * 5) - chrono::Duration::hours(1),
            false,
        );
    }
    let cfg = f.s.write(
        "dbsafe.toml",
        "[env.production]\nretention = { keep_within = \"30d\" }\n",
    );
    f.prune().env("DBSAFE_CONFIG", &cfg).succeeds();
    let files = f.files();
    let prod = files
        .iter()
        .filter(|n| n.starts_with("production_"))
        .count();
    let dev = files
        .iter()
        .filter(|n| n.starts_with("development_"))
        .count();
    assert_eq!(prod, 6, "production keeps 30 days: {files:?}");
    assert_eq!(dev, 7, "development falls back to keep 7 / 7d");
}

#[test]
fn stale_temporaries_and_orphan_sidecars_are_removed_young_ones_stay() {
    let f = Fixture::new();
    f.add("production", "app", now(), false);
    let dir = f.store.join("backups");
    // A file a writer left: three hours old, or written now.
    let left = |name: &str, old: bool| {
        let p = dir.join(name);
        std::fs::write(&p, b"partial").unwrap();
        if old {
            Cmd::new("touch")
                .args(["-d", "3 hours ago"])
                .arg(&p)
                .succeeds();
        }
        p
    };
    let old_tmp = left(
        ".production_app_full_20200101_000000.sqlite.zst.tmp.1.deadbeef",
        true,
    );
    let young_tmp = left(
        ".production_app_full_20200102_000000.sqlite.zst.tmp.2.cafecafe",
        false,
    );
    // Sidecars with no artifact: one left by a crash, one of a writer
    // (on another host, holding no lock here) about to commit its artifact.
    let orphan = left(
        "production_app_full_20200101_000000.sqlite.zst.meta.json",
        true,
    );
    let committing = left(
        "production_app_full_20200102_000000.sqlite.zst.sha256",
        false,
    );
    let plan = f
        .prune()
        .args(["--keep-last", "5", "--dry-run", "--json"])
        .succeeds()
        .json();
    assert_eq!(plan["temporaries_removed"].as_array().unwrap().len(), 1);
    assert_eq!(plan["orphan_sidecars_removed"].as_array().unwrap().len(), 1);
    assert!(old_tmp.exists() && orphan.exists());
    for _ in 0..2 {
        f.prune().args(["--keep-last", "5"]).succeeds();
        assert!(!old_tmp.exists());
        assert!(
            young_tmp.exists(),
            "a temporary younger than --stale-tmp may belong to a running writer"
        );
        assert!(!orphan.exists());
        assert!(
            committing.exists(),
            "a sidecar younger than --stale-tmp stays"
        );
    }
}

/// A restore reading an older backup, and the prune that runs meanwhile
/// (here from the restore's own --before-cmd): the series being read keeps
/// its backups that run, the next run deletes them.
#[test]
fn prune_leaves_the_series_a_restore_is_reading() {
    let f = Fixture::new();
    let [old, other] = ["app", "crm"].map(|db| {
        f.add("production", db, now() - days(1), true);
        f.add("production", db, now() - days(40), true)
    });
    let report = f.s.path("prune.json");
    let prune_meanwhile = format!(
        "{} --store {} --keep-last 1 --json > {}",
        dbsafe_tests::bin("dbprune").display(),
        f.store.display(),
        report.display()
    );
    let target = f.s.path("target.db");
    Cmd::tool("dbrestore")
        .arg("--store")
        .arg(&f.store)
        .args([
            "--database",
            "app",
            "--name",
            old.trim_end_matches(".sqlite.zst"),
        ])
        .arg("--target")
        .arg(sqlite::url(&target))
        .args(["--before-cmd", &prune_meanwhile])
        .succeeds();
    let meanwhile: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        dbsafe_tests::pruned_ids(&meanwhile),
        std::slice::from_ref(&other)
    );
    assert!(
        meanwhile["warnings"].to_string().contains("being read"),
        "{meanwhile}"
    );
    assert!(f.files().contains(&old) && !f.files().contains(&other));
    // The restore is over: the next run deletes what it kept.
    f.prune().args(["--keep-last", "1"]).succeeds();
    assert!(!f.files().contains(&old));
}

#[test]
fn prune_never_touches_an_artifact_being_written() {
    let f = Fixture::new();
    for d in 1..5 {
        f.add("default", "big", now() - days(d), false);
    }
    sqlite::blobs(&f.s.path("big.db"), 75);
    let child = snap_to_store(sqlite::url(&f.s.path("big.db")), &f.store)
        .args(["--compress", "none"])
        .spawn();
    wait_until("dbsnap to start writing", Duration::from_secs(60), || {
        !temporaries(&f.store.join("backups")).is_empty()
    });
    f.prune()
        .args(["--keep-last", "0", "--stale-tmp", "1h"])
        .succeeds();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dbsnap failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = f.files();
    assert_eq!(
        files.len(),
        2,
        "the old newest is protected until the new one lands, then the new one: {files:?}"
    );
    let newest = artifacts(&f.store).into_iter().max().unwrap();
    Cmd::tool("dbverify").arg(&newest).succeeds();
}

#[test]
fn min_free_and_max_total_delete_oldest_unprotected_and_say_when_they_cannot() {
    let f = Fixture::new();
    let names: Vec<String> = (1..=6)
        .map(|d| f.add("production", "app", now() - days(d), false))
        .collect();
    let size = std::fs::metadata(f.store.join("backups").join(&names[0]))
        .unwrap()
        .len();
    f.prune()
        .args(["--keep-last", "10", "--max-total"])
        .arg(format!("{}", size * 4))
        .succeeds();
    assert_eq!(
        f.files(),
        names[..4].iter().cloned().collect(),
        "the two oldest went"
    );
    let r = f
        .prune()
        .args(["--keep-last", "10", "--min-free", "1000000T"])
        .fails_with_code(1);
    assert!(
        r.stderr()
            .contains("protected backups stop further deletion"),
        "{}",
        r.stderr()
    );
    assert_eq!(
        f.files(),
        [names[0].clone()].into_iter().collect(),
        "only the newest (protected) is left"
    );
}

impl Fixture {
    /// Adds a base backup of `env_db` (`production_app`) taken `d` days ago
    /// whose WAL starts at `start`, described by its metadata (the PITR
    /// drill covers real ones), and WAL segments 1 to 10 of timeline 1 and
    /// a history file, once.
    fn add_base(&self, env_db: &str, d: i64, start: &str) -> String {
        let dir = self.store.join("backups");
        std::fs::create_dir_all(&dir).unwrap();
        let (bytes, mut m) = self.template("app");
        let name = format!("{env_db}_base_{}.tar.zst", stamp(now() - days(d)));
        std::fs::write(dir.join(&name), &bytes).unwrap();
        m["backup_type"] = "base".into();
        m["wal"] = serde_json::json!({"timeline": 1, "start_lsn": "0/4000028", "stop_lsn": "0/4000100", "start_wal": start, "stop_wal": start});
        std::fs::write(
            dir.join(format!("{name}.meta.json")),
            serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
        if !self.store.join("wal").exists() {
            for seg in 1..=10 {
                wal_file(&self.store, &format!("0000000100000000000000{seg:02X}.zst"));
            }
            wal_file(&self.store, "00000002.history.zst");
        }
        name
    }

    /// The archived WAL files left.
    fn wal_left(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.store.join("wal"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

fn wal_file(store: &Path, name: &str) {
    std::fs::create_dir_all(store.join("wal")).unwrap();
    std::fs::write(store.join("wal").join(name), b"x").unwrap();
}

#[test]
fn wal_older_than_the_oldest_kept_base_backup_goes_history_stays() {
    let f = Fixture::new();
    f.add_base("production_app", 10, "000000010000000000000004");
    f.add_base("production_app", 2, "000000010000000000000008");
    let wal_left = || f.wal_left();
    f.prune().args(["--keep-last", "5", "--wal"]).succeeds();
    let left = wal_left();
    assert!(!left.contains("000000010000000000000003.zst"));
    assert!(
        left.contains("000000010000000000000004.zst"),
        "the oldest kept base backup needs it"
    );
    assert!(left.contains("00000002.history.zst"));
    // Once the older base backup is pruned, its WAL goes too.
    f.prune().args(["--keep-last", "1", "--wal"]).succeeds();
    let left = wal_left();
    assert!(!left.contains("000000010000000000000007.zst"));
    assert!(left.contains("000000010000000000000008.zst"));
    assert!(left.contains("00000002.history.zst"));
}

#[test]
fn wal_a_base_backup_of_another_series_needs_stays_when_the_run_looks_at_one_database() {
    let f = Fixture::new();
    let billing = f.add_base("production_billing", 12, "000000010000000000000002");
    let old_app = f.add_base("production_app", 10, "000000010000000000000004");
    f.add_base("production_app", 2, "000000010000000000000008");
    let all = f.wal_left();
    let prune = |extra: &[&str]| {
        let r = f
            .prune()
            .args(["--database", "app", "--keep-last", "1", "--wal", "--json"])
            .args(extra)
            .succeeds();
        let report: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
        report["wal_deleted"].clone()
    };
    // The dry run plans what the run does, and changes nothing.
    let planned = prune(&["--dry-run"]);
    assert_eq!(f.wal_left(), all);
    for round in 1..=2 {
        let deleted = prune(&[]);
        if round == 1 {
            assert_eq!(deleted, planned);
        }
        let left = f.wal_left();
        assert!(
            !left.contains("000000010000000000000001.zst"),
            "round {round}"
        );
        assert!(
            left.contains("000000010000000000000002.zst"),
            "round {round}: {billing} needs it: {left:?}"
        );
        assert!(left.contains("00000002.history.zst"));
        assert!(!f.files().contains(&old_app) && f.files().contains(&billing));
    }
    assert_eq!(planned, serde_json::json!(["000000010000000000000001"]));
}

#[test]
fn status_is_good_for_a_healthy_store_and_exits_1_otherwise() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.store.join("backups")).unwrap();
    let status = |f: &Fixture| {
        Cmd::tool("dbverify")
            .arg("--status")
            .arg("--store")
            .arg(&f.store)
    };
    let r = status(&f).arg("--json").fails_with_code(1);
    assert_eq!(r.json()["readiness"], "critical", "empty store");
    f.add(
        "production",
        "app",
        now() - chrono::Duration::hours(2),
        true,
    );
    f.add(
        "production",
        "app",
        now() - chrono::Duration::hours(1),
        false,
    );
    let r = status(&f).arg("--json").succeeds();
    assert_eq!(r.json()["readiness"], "good");
    assert_eq!(r.json()["series"][0]["count"], 2);
    assert_eq!(r.json()["series"][0]["verified_count"], 1);
    status(&f).args(["--min-count", "3"]).fails_with_code(1);
    // Too old.
    let old = Fixture::new();
    old.add(
        "production",
        "app",
        now() - chrono::Duration::hours(30),
        true,
    );
    let r = status(&old)
        .args(["--max-age", "26h", "--json"])
        .fails_with_code(1);
    assert_eq!(r.json()["readiness"], "critical");
    status(&old).args(["--max-age", "2d"]).succeeds();
    // A WAL gap.
    for seg in [1, 2, 4] {
        wal_file(&f.store, &format!("0000000100000000000000{seg:02X}.zst"));
    }
    let r = status(&f).arg("--json").fails_with_code(1);
    assert!(r.json()["wal"]["gaps"][0]
        .as_str()
        .unwrap()
        .starts_with("000000010000000000000003"));
}

#[test]
fn another_prune_holding_the_store_lock_is_refused_and_nothing_is_deleted() {
    let f = Fixture::new();
    let old = f.add("production", "app", now() - days(3), false);
    f.add("production", "app", now(), false);
    let before = f.files();
    assert!(before.contains(&old));
    let holder = LockHolder::take(&f.store.join("locks/dbprune.lock"));
    f.prune()
        .args(["--keep-last", "1"])
        .fails_with_code(4)
        .stderr_has(&format!(
            "dbprune is locked by another process (pid {};",
            holder.pid()
        ));
    assert_eq!(f.files(), before, "a refused prune deleted");
    // Once the holder is gone, the same prune deletes the older backup.
    holder.kill();
    f.prune().args(["--keep-last", "1"]).succeeds();
    assert!(!f.files().contains(&old));
}
