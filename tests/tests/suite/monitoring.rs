//! The monitoring that ships with dbsafe: the alert rules load, and each
//! alert fires from series with the names and labels the tools write.

use dbsafe_tests::{edit_meta, require, snap_to_store, sqlite, Cmd};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn alerts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../monitoring/alerts.yml")
        .canonicalize()
        .expect("monitoring/alerts.yml")
}

/// The series of a textfile: `name{labels}` → value.
fn series(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn one<'a>(all: &'a BTreeMap<String, f64>, name: &str) -> (&'a String, f64) {
    one_with(all, name, "")
}

fn one_with<'a>(all: &'a BTreeMap<String, f64>, name: &str, label: &str) -> (&'a String, f64) {
    let found: Vec<_> = all
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{name}{{")) && k.contains(label))
        .collect();
    assert_eq!(found.len(), 1, "one {name} series expected: {all:?}");
    (found[0].0, *found[0].1)
}

/// The summary and description of `alert` in alerts.yml, rendered with `labels`.
fn annotations(alert: &str, labels: &[(String, String)]) -> String {
    let text = std::fs::read_to_string(alerts()).expect("alerts.yml");
    let block = text
        .split("- alert: ")
        .find(|b| b.starts_with(&format!("{alert}\n")))
        .unwrap_or_else(|| panic!("no alert {alert} in alerts.yml"));
    let mut out = String::new();
    for key in ["summary", "description"] {
        let line = block
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("{alert} has no {key}"));
        let mut v = line.trim_matches('"').to_string();
        for (k, val) in labels {
            v = v.replace(&format!("{{{{ $labels.{k} }}}}"), val);
        }
        assert!(
            !v.contains("{{"),
            "{alert} {key} uses a template this test does not render: {v}"
        );
        out.push_str(&format!(
            "              {key}: \"{}\"\n",
            v.replace('"', "\\\"")
        ));
    }
    out
}

/// The labels of a series key, as promtool's `exp_labels` wants them.
fn labels(key: &str) -> String {
    key.split_once('{')
        .map(|(_, l)| l.trim_end_matches('}').to_string())
        .unwrap_or_default()
}

#[test]
fn the_alert_rules_load_in_promtool() {
    require("promtool", "the Debian package prometheus");
    Cmd::new("promtool")
        .args(["check", "rules"])
        .arg(alerts())
        .succeeds();
}

#[test]
fn every_alert_fires_from_the_series_the_tools_write() {
    require("promtool", "the Debian package prometheus");
    let (s, _) = sqlite::app_db(10);
    let store = s.path("store");
    let prom = s.path("dbsafe.prom");
    let snap = |db: &str| {
        snap_to_store(sqlite::url(&s.path(db)), &store)
            .args(["--env", "production"])
            .env("DBSAFE_METRICS_FILE", &prom)
    };
    snap("app.db").succeeds();
    // The same database name, so the failure lands on the same series.
    std::fs::create_dir_all(s.path("gone")).unwrap();
    snap("gone/app.db").fails_with_code(1);
    let artifact = std::fs::read_dir(store.join("backups"))
        .expect("backups")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.to_string_lossy().ends_with(".sqlite.zst") && !p.to_string_lossy().contains("_latest")
        })
        .expect("an artifact");
    Cmd::tool("dbverify")
        .arg(&artifact)
        .args(["--level", "quick"])
        .env("DBSAFE_METRICS_FILE", &prom)
        .succeeds();
    // A restore drill of a backup whose recorded row counts are wrong fails.
    edit_meta(&artifact, |meta| {
        for t in meta["tables"].as_array_mut().expect("tables") {
            t["rows"] = serde_json::json!(999_999);
        }
    });
    Cmd::tool("dbverify")
        .arg(&artifact)
        .args(["--level", "restore"])
        .env("DBSAFE_METRICS_FILE", &prom)
        .fails_with_code(1);
    let seg = s.path("seg");
    std::fs::write(&seg, vec![7u8; 1 << 20]).unwrap();
    dbsafe_tests::push_wal(&seg, "000000010000000000000001", &store)
        .env("DBSAFE_ENV", "production")
        .env("DBSAFE_METRICS_FILE", &prom)
        .succeeds();
    dbsafe_tests::push_wal(
        s.path("no-such-segment"),
        "000000010000000000000002",
        &store,
    )
    .env("DBSAFE_ENV", "production")
    .env("DBSAFE_METRICS_FILE", &prom)
    .run();
    let all = series(&std::fs::read_to_string(&prom).expect("textfile"));

    let (success, _) = one(&all, "dbsafe_backup_last_success_timestamp_seconds");
    let (size, bytes) = one(&all, "dbsafe_backup_size_bytes");
    let (failures, failed) = one(&all, "dbsafe_backup_failures_total");
    assert_eq!(failed, 1.0, "one failed run counted");
    let (failure, _) = one(&all, "dbsafe_backup_last_failure_timestamp_seconds");
    let (score, drill) = one_with(&all, "dbsafe_verify_integrity_score", "level=\"restore\"");
    assert!(drill < 1.0, "the drill's score is below 1: {drill}");
    let (verified, _) = one(&all, "dbsafe_verify_last_success_timestamp_seconds");
    let (wal, _) = one(&all, "dbsafe_wal_last_archived_timestamp_seconds");
    let (wal_failures, wal_failed) = one(&all, "dbsafe_wal_push_failures_total");
    assert_eq!(wal_failed, 1.0, "one failed push counted");
    let (wal_failure, _) = one(&all, "dbsafe_wal_last_failure_timestamp_seconds");

    // promtool evaluates from time 0: timestamps are replayed as "at the
    // start", counters and gauges with the values the tools wrote.
    let hours = 50;
    let flat = |v: f64| format!("'{v}x{}'", hours * 60);
    let success_missing = format!("'0x{} _x{}'", 60, hours * 60 - 60);
    let input = [
        (success.clone(), flat(0.0)),
        (
            size.clone(),
            format!("'{}x{} {}x30'", bytes, hours * 60 - 30, bytes * 3.0),
        ),
        (
            failures.clone(),
            format!("'0x30 {failed}x{}'", hours * 60 - 30),
        ),
        (score.clone(), flat(drill)),
        (verified.clone(), flat(0.0)),
        (wal.clone(), flat(0.0)),
        (
            wal_failures.clone(),
            format!("'0x30 {wal_failed}x{}'", hours * 60 - 30),
        ),
        (
            success.replace("production", "staging"),
            success_missing.clone(),
        ),
        // A failure 30 minutes in, after the successes replayed at the start;
        // and a first-ever failure of a series that never succeeded.
        (failure.clone(), format!("'_x30 1800x{}'", hours * 60 - 30)),
        (
            wal_failure.clone(),
            format!("'_x30 1800x{}'", hours * 60 - 30),
        ),
        (
            failure.replace("production", "lab"),
            format!("'_x30 1800x{}'", hours * 60 - 30),
        ),
        // The lab series succeeds two hours in: its failure alert clears.
        (
            success.replace("production", "lab"),
            format!("'_x120 7200x{}'", hours * 60 - 120),
        ),
    ];
    let mut test = String::from("rule_files:\n  - ");
    test.push_str(&alerts().display().to_string());
    test.push_str("\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n");
    for (k, v) in &input {
        test.push_str(&format!("      - series: '{k}'\n        values: {v}\n"));
    }
    test.push_str("    alert_rule_test:\n");
    let fires = |test: &mut String, at: &str, alert: &str, key: &str, extra: &str| {
        let mut l = labels(key);
        if !extra.is_empty() {
            l.push(',');
            l.push_str(extra);
        }
        let mut exp = String::new();
        let mut pairs = Vec::new();
        for pair in l.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').expect("label");
            exp.push_str(&format!("              {k}: {v}\n"));
            pairs.push((k.to_string(), v.trim_matches('"').to_string()));
        }
        test.push_str(&format!(
            "      - eval_time: {at}\n        alertname: {alert}\n        exp_alerts:\n          - exp_labels:\n{exp}            exp_annotations:\n{}",
            annotations(alert, &pairs)
        ));
    };
    let failed_test = |test: &mut String, at: &str, envs: &[&str]| {
        test.push_str(&format!(
            "      - eval_time: {at}\n        alertname: DbsafeBackupFailed\n        exp_alerts:\n"
        ));
        for l in envs
            .iter()
            .map(|e| labels(&failure.replace("production", e)))
        {
            let mut exp = String::new();
            let mut pairs = Vec::new();
            for pair in l
                .split(',')
                .chain(["severity=critical"])
                .filter(|p| !p.is_empty())
            {
                let (k, v) = pair.split_once('=').expect("label");
                exp.push_str(&format!("              {k}: {v}\n"));
                pairs.push((k.to_string(), v.trim_matches('"').to_string()));
            }
            test.push_str(&format!(
                "          - exp_labels:\n{exp}            exp_annotations:\n{}",
                annotations("DbsafeBackupFailed", &pairs)
            ));
        }
    };
    // At 45m both series have failed: the one that succeeded before, and
    // the one that never did; at 3h only the one with no success since.
    failed_test(&mut test, "45m", &["production", "lab"]);
    failed_test(&mut test, "3h", &["production"]);
    fires(
        &mut test,
        "27h",
        "DbsafeBackupTooOld",
        success,
        "severity=critical",
    );
    fires(
        &mut test,
        "3h",
        "DbsafeBackupMissing",
        &success.replace("production", "staging"),
        "severity=warning",
    );
    fires(
        &mut test,
        "50h",
        "DbsafeBackupSizeAnomaly",
        size,
        "severity=warning",
    );
    fires(
        &mut test,
        "10m",
        "DbsafeVerifyFailed",
        score,
        "severity=critical",
    );
    fires(
        &mut test,
        "2d1h",
        "DbsafeVerifyStale",
        verified,
        "severity=warning",
    );
    fires(
        &mut test,
        "30m",
        "DbsafeWalArchiveLagging",
        wal,
        "severity=critical",
    );
    fires(
        &mut test,
        "45m",
        "DbsafeWalPushFailing",
        wal_failure,
        "severity=critical",
    );
    fires(
        &mut test,
        "10m",
        "DbsafeRestoreDrillFailed",
        score,
        "severity=critical",
    );
    let file = s.write("alerts_test.yml", &test);
    let r = Cmd::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .run();
    assert!(
        r.out.status.success(),
        "promtool test rules failed:\n{}\n{}\n--- test file ---\n{test}",
        r.stdout(),
        r.stderr()
    );
}
